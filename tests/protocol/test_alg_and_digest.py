"""The JWS algorithm under both its names (RFC 8037 `EdDSA`, RFC 9864 `Ed25519`), checked with
joserfc, an implementation other than ours; and the TOTP digests against RFC 6238's SHA-256
vectors and pyotp."""

from __future__ import annotations

import base64
import hashlib
import json
import warnings

import hypothesis
import pyotp
import pytest
from hypothesis import strategies
from joserfc import jws as jose_jws
from joserfc.jwk import OKPKey

from central.checkin import keychain
from edge_agent.protocol import b64
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from edge_agent.protocol import totp

KEY = keys.SigningKey(bytes(range(32)))
CLAIMS = {
    "site": "campus",
    "room": "a-101",
    "device": "pi-a101",
    "seq": 1,
    "boot": "0123456789abcdef",
    "iat": 1_764_662_400_000,
    "clock": {"source": "ntp", "uncertainty_ms": 10},
    "slot": 88_233_120,
    "slot_s": 20,
    "otp_step_s": 30,
    "qr": "A" * 86,
    "prev": "0" * 64,
}


def jose_key(key: keys.SigningKey) -> OKPKey:
    return OKPKey.import_key(
        {"kty": "OKP", "crv": "Ed25519", "d": b64.encode(key.seed), "x": b64.encode(key.public)}
    )


def signed_with_alg(alg: str, payload: bytes, typ: str = proof.TYP) -> str:
    """A JWS as another implementation makes it, with `alg` as given."""
    header = {"alg": alg, "kid": "pi-a101", "typ": typ}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns that EdDSA is deprecated
        return jose_jws.serialize_compact(header, payload, jose_key(KEY), algorithms=[alg])


@pytest.mark.parametrize("alg", ["EdDSA", "Ed25519"])
def test_both_names_of_the_algorithm_are_accepted(alg: str) -> None:
    payload = json.dumps(CLAIMS, separators=(",", ":")).encode()
    compact = signed_with_alg(alg, payload)
    parsed, claims = proof.decode(compact)
    assert parsed.header["alg"] == alg and jws.verify(parsed, KEY.public)
    assert claims.seq == 1
    tampered = compact[:-2] + ("A" if compact[-2] != "A" else "B") + compact[-1]
    assert not jws.verify(jws.parse(tampered, 4096), KEY.public)


@pytest.mark.parametrize("alg", ["none", "ES256", "HS256", "ed25519", "EdDSA ", ["EdDSA"], None])
def test_other_algorithms_are_refused(alg: object) -> None:
    header = b64.encode(json.dumps({"alg": alg, "kid": "pi-a101", "typ": "t"}).encode())
    compact = f"{header}.{b64.encode(b'{}')}.{b64.encode(bytes(64))}"
    with pytest.raises(jws.JWSError) as caught:
        jws.parse(compact, 4096)
    assert caught.value.reason == "bad_header"


def test_v1_emits_eddsa_and_joserfc_verifies_it() -> None:
    compact = jws.sign(b'{"v":1}', KEY, kid="pi-a101", typ="t")
    header = json.loads(b64.decode(compact.split(".")[0]))
    assert header == {"alg": "EdDSA", "kid": "pi-a101", "typ": "t"}
    public = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": b64.encode(KEY.public)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = jose_jws.deserialize_compact(compact, public, algorithms=["EdDSA"])
    assert found.payload == b'{"v":1}'


def test_key_id_is_the_rfc7638_thumbprint() -> None:
    assert keychain.thumbprint(KEY.public) == jose_key(KEY).thumbprint()
    other = keys.SigningKey.generate()
    assert keychain.thumbprint(other.public) == jose_key(other).thumbprint()


# RFC 6238 Appendix B, SHA-256 rows: the seed is the ASCII "1234567890" repeated to 32 bytes.
RFC6238_SHA256_SEED = b"12345678901234567890123456789012"
RFC6238_SHA256 = [
    (59, "46119246"),
    (1111111109, "68084774"),
    (1111111111, "67062674"),
    (1234567890, "91819424"),
    (2000000000, "90698825"),
    (20000000000, "77737706"),
]


@pytest.mark.parametrize(("unix_s", "expected"), RFC6238_SHA256)
def test_rfc6238_sha256_vectors_here_and_in_pyotp(unix_s: int, expected: str) -> None:
    ours = totp.totp(RFC6238_SHA256_SEED, unix_s, step_s=30, digits=8, digest="sha256")
    secret = base64.b32encode(RFC6238_SHA256_SEED).decode()
    theirs = pyotp.TOTP(secret, digits=8, digest=hashlib.sha256, interval=30).at(unix_s)
    assert ours == theirs == expected
    # The 6-digit code a device shows is the same value modulo 10**6.
    assert totp.totp(RFC6238_SHA256_SEED, unix_s, digest="sha256") == expected[-6:]
    counter = totp.matches(RFC6238_SHA256_SEED, expected[-6:], unix_s, 30, digest="sha256")
    assert counter == unix_s // 30


@hypothesis.given(
    key=strategies.binary(min_size=32, max_size=32),
    unix_s=strategies.integers(min_value=0, max_value=2**40),
    step_s=strategies.integers(min_value=10, max_value=300),
    digest=strategies.sampled_from(["sha1", "sha256"]),
)
def test_device_codes_match_pyotp(key: bytes, unix_s: int, step_s: int, digest: str) -> None:
    # pyotp's TOTP takes steps of at most 120 s; its HOTP at floor(t / step) is the same code.
    reference = pyotp.HOTP(base64.b32encode(key).decode(), digest=getattr(hashlib, digest))
    assert totp.totp(key, unix_s, step_s, digest=digest) == reference.at(unix_s // step_s)
