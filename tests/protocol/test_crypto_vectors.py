"""Published vectors: RFC 6238/4226 (TOTP/HOTP), RFC 8032 and Wycheproof (Ed25519)."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

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
