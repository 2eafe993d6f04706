"""Published vectors: RFC 6238/4226 (TOTP/HOTP), RFC 8032 and Wycheproof (Ed25519)."""

from __future__ import annotations

import json
import pathlib
import re

import hypothesis
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf import hkdf
from hypothesis import strategies

from edge_agent.protocol import keys
from edge_agent.protocol import totp


def _records(text: str) -> list[dict[str, str]]:
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\s*([A-Z]+) = (.*)", line)
        if match:
            current[match.group(1)] = match.group(2).strip()
        elif not line.strip() and current:
            records.append(current)
            current = {}
    if current:
        records.append(current)
    return records


def test_rfc6238_vectors(shared_data: pathlib.Path) -> None:
    records = _records((shared_data / "crypto" / "rfc-6238.txt").read_text())
    assert len(records) == 18
    for record in records:
        code = totp.totp(
            record["SECRET"].encode(),
            int(record["TIME"]),
            step_s=30,
            digits=len(record["TOTP"]),
            digest=record["MODE"].lower(),
        )
        assert code == record["TOTP"], record


def test_rfc4226_vectors(shared_data: pathlib.Path) -> None:
    records = _records((shared_data / "crypto" / "rfc-4226.txt").read_text())
    assert records
    for record in records:
        if "HOTP" not in record:
            continue
        code = totp.hotp(record["SECRET"].encode(), int(record["COUNTER"]), 6)
        assert code == record["HOTP"], record


def test_rfc8032_vectors(shared_data: pathlib.Path) -> None:
    lines = (shared_data / "crypto" / "rfc8032-ed25519-first4.input").read_text().splitlines()
    lines = [line for line in lines if line.strip()]
    assert len(lines) >= 4
    for line in lines:
        secret_public, public, message, signature_message, _ = line.split(":")
        key = keys.SigningKey(bytes.fromhex(secret_public[:64]))
        assert key.public.hex() == public
        msg = bytes.fromhex(message)
        signature = key.sign(msg)
        assert signature.hex() == signature_message[:128]
        assert keys.verify(key.public, msg, signature)
        assert not keys.verify(key.public, msg + b"x", signature)


def _wycheproof(shared_data: pathlib.Path) -> list[tuple[bytes, dict[str, object]]]:
    data = json.loads((shared_data / "crypto" / "wycheproof-ed25519_test.json").read_text())
    cases = []
    for group in data["testGroups"]:
        public = bytes.fromhex(group["publicKey"]["pk"])
        cases.extend((public, test) for test in group["tests"])
    assert len(cases) == data["numberOfTests"]
    return cases


def test_wycheproof_ed25519(shared_data: pathlib.Path) -> None:
    invalid = valid = 0
    for public, case in _wycheproof(shared_data):
        ok = keys.verify(public, bytes.fromhex(str(case["msg"])), bytes.fromhex(str(case["sig"])))
        if case["result"] == "invalid":
            invalid += 1
            assert not ok, f"invalid case {case['tcId']} ({case['comment']}) was accepted"
        else:
            valid += 1
            assert ok, f"valid case {case['tcId']} ({case['comment']}) was rejected"
    assert invalid > 50 and valid > 50


@pytest.mark.parametrize("digest", ["sha1", "sha256"])
def test_totp_matches_window(digest: str) -> None:
    key = b"k" * 32
    now = 1_700_000_000.0
    previous = totp.totp(key, now - 30, digest=digest)
    assert totp.matches(key, previous, now, window=1, digest=digest) == totp.counter_at(now) - 1
    assert totp.matches(key, totp.totp(key, now - 90, digest=digest), now, digest=digest) is None
    assert totp.matches(key, "12345", now) is None
    assert totp.matches(key, "abcdef", now) is None


# RFC 5869 Appendix A, test cases 1-3 (HKDF-SHA256): IKM, salt, info, L, OKM.
RFC5869_SHA256 = [
    (
        "0b" * 22,
        "000102030405060708090a0b0c",
        "f0f1f2f3f4f5f6f7f8f9",
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        bytes(range(0x00, 0x50)).hex(),
        bytes(range(0x60, 0xB0)).hex(),
        bytes(range(0xB0, 0x100)).hex(),
        82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (
        "0b" * 22,
        "",
        "",
        42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), RFC5869_SHA256)
def test_rfc5869_hkdf_sha256(ikm: str, salt: str, info: str, length: int, okm: str) -> None:
    derived = totp.hkdf_sha256(bytes.fromhex(ikm), bytes.fromhex(salt), bytes.fromhex(info), length)
    assert derived.hex() == okm


@hypothesis.given(
    secret=strategies.binary(min_size=1, max_size=64),
    salt=strategies.binary(max_size=64),
    info=strategies.binary(max_size=64),
    length=strategies.integers(min_value=1, max_value=255 * 32),
)
def test_hkdf_agrees_with_openssl(secret: bytes, salt: bytes, info: bytes, length: int) -> None:
    """The standard-library HKDF gives OpenSSL's bytes (through `cryptography`) for any input."""
    reference = hkdf.HKDF(hashes.SHA256(), length, salt or None, info).derive(secret)
    assert totp.hkdf_sha256(secret, salt, info, length) == reference
    with pytest.raises(ValueError):
        totp.hkdf_sha256(secret, salt, info, 255 * 32 + 1)
