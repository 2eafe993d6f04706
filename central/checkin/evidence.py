"""Evidence bundles: an attendance record anyone can check offline with central's public key.

A check-in record alone is only central's word. The bundle adds what the device signed: the QR
token of the slot and the proof that displayed it, and central countersigns the record over
both. The bundle also carries the device's key chain (keychain.py: the enrollment and
every signed key change up to the key that signed the proof), so a verifier needs nothing but
central's Ed25519 public key; a bundle without a chain (made before chains) needs the device's
key too. The bundle is held to one canonical byte form (RFC 8785 JCS), so changing any byte of
it fails verification. A file may end with one newline (editors and `jq` add one), which is not
part of the bundle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing

import rfc8785

from central.checkin import keychain
from edge_agent.protocol import b64
from edge_agent.protocol import chain
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken

RECORD_TYP = "roomproof-record+jws"
RECORD_KID = "central"
BUNDLE_TYPE = "roomproof-evidence/v1"
MAX_BUNDLE_BYTES = 256 * 1024

_BUNDLE_KEYS = frozenset({"type", "record", "token", "proof"})
_CHAIN_KEY = "key"  # the optional member holding the device's key chain
_RECORD_INTS = ("record", "slot", "checked_in_at", "issued_at")
_RECORD_STRS = ("site", "room", "device", "student_id", "status")
_SIGNED_STRS = ("token", "proof_hash")


class EvidenceError(ValueError):
    """A bundle that does not verify; `reason` is a short machine label, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Verified:
    """What a valid bundle establishes: the countersigned record and the device's proof."""

    record: dict[str, typing.Any]
    proof: proof.Claims
    checks: list[str]
    device_kid: str = ""  # RFC 7638 thumbprint of the device key that signed the proof


def canonical_json(value: typing.Any) -> bytes:
    """RFC 8785 (JCS) bytes of `value`; ValueError for what has no canonical form (NaN,
    infinities, integers beyond 2**53-1, lone surrogates, non-string keys)."""
    return rfc8785.dumps(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _record_problem(record: object, signed: bool) -> str | None:
    """Why `record` lacks a field a bundle needs, or None when it has them all."""
    if not isinstance(record, dict):
        return "record is not a JSON object"
    for field in _RECORD_INTS:
        if not _is_int(record.get(field)):
            return f"record field {field!r} must be an integer"
    strings = _RECORD_STRS + _SIGNED_STRS if signed else _RECORD_STRS
    for field in strings:
        if not isinstance(record.get(field), str):
            return f"record field {field!r} must be a string"
    return None


def sign_record(
    record: dict[str, typing.Any],
    token_signature: bytes,
    proof_jws: str,
    central_key: keys.SigningKey,
) -> str:
    """Countersign `record` together with the QR token and the hash of the slot's proof."""
    problem = _record_problem(record, signed=False)
    if problem is not None:
        raise ValueError(problem)
    if not isinstance(token_signature, bytes) or len(token_signature) != keys.SIGNATURE_BYTES:
        raise ValueError(f"a QR token signature is {keys.SIGNATURE_BYTES} bytes")
    claims = {**record, "token": b64.encode(token_signature), "proof_hash": chain.link(proof_jws)}
    return jws.sign(rfc8785.dumps(claims), central_key, kid=RECORD_KID, typ=RECORD_TYP)


def _canonical(bundle: dict[str, typing.Any]) -> bytes:
    return rfc8785.dumps(bundle)


def chain_hash(key_chain: typing.Any) -> str:
    """Lowercase hex SHA-256 of the JCS bytes of a bundle's `key` member, which records
    countersign as `key_chain_sha256` (ValueError for what has no canonical form)."""
    return hashlib.sha256(rfc8785.dumps(key_chain)).hexdigest()


def make_bundle(
    record_jws: str,
    token_signature: bytes,
    proof_jws: str,
    key: dict[str, typing.Any] | None = None,
) -> bytes:
    """The canonical bundle bytes (RFC 8785 JCS: sorted keys, no spaces, no trailing
    newline); `key` is the device's key chain (keychain.member), omitted only by bundles
    made before chains."""
    bundle: dict[str, typing.Any] = {
        "type": BUNDLE_TYPE,
        "record": record_jws,
        "token": b64.encode(token_signature),
        "proof": proof_jws,
    }
    if key is not None:
        bundle[_CHAIN_KEY] = key
    return _canonical(bundle)


def _not_canonical(data: bytes, canonical: bytes) -> EvidenceError:
    """Say exactly how the file's bytes `data` depart from the canonical form."""
    if data.rstrip(b" \t\r\n") == canonical:
        tail = data[len(canonical) :]
        return EvidenceError(
            "not_canonical",
            f"bundle ends with {tail!r} after its JSON: only one trailing newline (a single"
            " LF byte, 0x0a) is tolerated; remove the rest",
        )
    offset = next(
        (i for i, (a, b) in enumerate(zip(data, canonical, strict=False)) if a != b),
        min(len(data), len(canonical)),
    )
    return EvidenceError(
        "not_canonical",
        f"bundle bytes differ from their canonical form (RFC 8785 JCS) at byte {offset}",
    )


def _load(data: object) -> tuple[str, str, str, object]:
    """The record JWS, token text, proof JWS and key chain (None if absent) of canonical
    bundle bytes (one trailing LF, which is not part of the bundle, is allowed)."""
    if not isinstance(data, bytes):
        raise EvidenceError("malformed", "a bundle is bytes")
    body = data[:-1] if data.endswith(b"\n") else data
    if len(body) > MAX_BUNDLE_BYTES:
        raise EvidenceError("oversize", f"bundle of {len(body)} bytes exceeds {MAX_BUNDLE_BYTES}")
    try:
        bundle = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise EvidenceError("malformed", f"bundle is not UTF-8 JSON: {exc}") from exc
    if not isinstance(bundle, dict) or set(bundle) - {_CHAIN_KEY} != _BUNDLE_KEYS:
        raise EvidenceError(
            "malformed", f"bundle must be an object of {sorted(_BUNDLE_KEYS)} and optional key"
        )
    if not all(isinstance(bundle[name], str) for name in _BUNDLE_KEYS):
        raise EvidenceError("malformed", "bundle members must be strings")
    try:
        canonical = _canonical(bundle)
    except (ValueError, RecursionError) as exc:  # e.g. a lone surrogate: no UTF-8 form
        raise EvidenceError("malformed", f"bundle has no canonical form: {exc}") from exc
    if body != canonical:
        raise _not_canonical(data, canonical)
    if bundle["type"] != BUNDLE_TYPE:
        raise EvidenceError("wrong_type", f"bundle type must be {BUNDLE_TYPE}")
    return bundle["record"], bundle["token"], bundle["proof"], bundle.get(_CHAIN_KEY)


def _check_key(name: str, public: object) -> None:
    if not isinstance(public, bytes) or len(public) != keys.PUBLIC_BYTES:
        raise EvidenceError("bad_key", f"{name} public key must be {keys.PUBLIC_BYTES} bytes")


def _record(record_jws: str, central_public: bytes) -> dict[str, typing.Any]:
    try:
        parsed = jws.parse(record_jws, MAX_BUNDLE_BYTES)
    except (jws.JWSError, RecursionError) as exc:
        raise EvidenceError("bad_record", f"record JWS: {exc}") from exc
    if parsed.header.get("typ") != RECORD_TYP or parsed.kid != RECORD_KID:
        raise EvidenceError("bad_record", f"record header must be typ {RECORD_TYP}, kid central")
    if not jws.verify(parsed, central_public):
        raise EvidenceError("record_signature", "central countersignature does not verify")
    try:
        record = json.loads(parsed.payload.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise EvidenceError("bad_record", f"record payload is not UTF-8 JSON: {exc}") from exc
    problem = _record_problem(record, signed=True)
    if problem is not None:
        raise EvidenceError("bad_record", problem)
    return typing.cast(dict[str, typing.Any], record)


def _proof(proof_jws: str, device_public: bytes) -> proof.Claims:
    try:
        parsed, claims = proof.decode(proof_jws, proof.MAX_BYTES)
    except (proof.ProofError, RecursionError) as exc:
        raise EvidenceError("bad_proof", f"proof JWS: {exc}") from exc
    if not jws.verify(parsed, device_public):
        raise EvidenceError("proof_signature", "proof signature does not verify with device key")
    return claims


def _device_key(
    chain: object, device_public: bytes | None, record: dict[str, typing.Any], seq: int
) -> tuple[bytes, str, list[str]]:
    """The key that signed the proof, its key id, and what showed it: the bundle's key chain
    (checked, and a given device key must be one of its keys), else the given device key."""
    if chain is None:
        if device_public is None:
            raise EvidenceError(
                "no_device_key", "this bundle has no key chain: give the device's key"
            )
        _check_key("device", device_public)
        kid = keychain.thumbprint(device_public)
        checks = []
    else:
        try:
            checked = keychain.verify(chain, record["site"], record["device"], seq)
        except keychain.ChainError as exc:
            raise EvidenceError("key_chain", f"device key chain: {exc}") from exc
        if device_public is not None and device_public not in checked.keys:
            raise EvidenceError("key_mismatch", "the given device key is not in the key chain")
        device_public, kid, checks = checked.key, checked.kid, checked.checks
    signed_kid = record.get("device_kid")
    if signed_kid is not None and signed_kid != kid:
        raise EvidenceError("key_mismatch", "central countersigned another device key")
    signed_chain = record.get("key_chain_sha256")
    if signed_chain is not None and (chain is None or chain_hash(chain) != signed_chain):
        raise EvidenceError("key_chain", "the key chain is not the one central countersigned")
    if signed_chain is not None:
        checks.append("key chain is the one central countersigned")
    return device_public, kid, checks


def verify_bundle(data: bytes, device_public: bytes | None, central_public: bytes) -> Verified:
    """Check every signature and every link of a bundle; raise EvidenceError on any problem.
    `device_public` may be None for a bundle with a key chain."""
    record_jws, token_text, proof_jws, key_chain = _load(data)
    if device_public is not None:
        _check_key("device", device_public)
    _check_key("central", central_public)
    record = _record(record_jws, central_public)
    checks = [f"central countersignature valid (record {record['record']})"]
    try:
        token = b64.decode(token_text)
    except ValueError as exc:
        raise EvidenceError("bad_token", f"bundle token is not base64url: {exc}") from exc
    try:
        _, unverified = proof.decode(proof_jws, proof.MAX_BYTES)
    except (proof.ProofError, RecursionError) as exc:
        raise EvidenceError("bad_proof", f"proof JWS: {exc}") from exc
    device_public, kid, chain_checks = _device_key(key_chain, device_public, record, unverified.seq)
    checks.extend(chain_checks)
    claims = _proof(proof_jws, device_public)
    for field in ("site", "room", "device", "slot"):
        if record[field] != getattr(claims, field):
            raise EvidenceError(
                "mismatch", f"record {field} {record[field]!r} differs from the proof's"
            )
    if record["token"] != token_text:
        raise EvidenceError("token_mismatch", "bundle token is not the countersigned token")
    if claims.qr != token_text:
        raise EvidenceError("token_mismatch", "the proof of the slot displayed another token")
    slot = claims.slot
    if not qrtoken.verify(device_public, claims.site, claims.device, claims.room, slot, token):
        raise EvidenceError("token_signature", f"QR token is not the device's for slot {slot}")
    checks.append(f"QR token signed by the device for slot {slot}")
    if record["proof_hash"] != chain.link(proof_jws):
        raise EvidenceError("proof_hash", "proof is not the one central countersigned")
    checks.append(f"proof seq {claims.seq} of slot {slot} signed by the device")
    checks.append("proof displayed this token")
    checks.append("record names this proof (sha256 " + record["proof_hash"][:16] + "...)")
    return Verified(record=record, proof=claims, checks=checks, device_kid=kid)
