"""JWS compact serialization (RFC 7515) with Ed25519 (RFC 8037), and nothing else.

Deliberately narrow instead of a general JOSE library: one algorithm, a size limit applied
before any decoding, a strict header, and the signature over the exact bytes received.

The algorithm has two names: `EdDSA` (RFC 8037) and `Ed25519` (RFC 9864, which deprecates
`EdDSA` because it does not say which curve). Both are accepted; v1 emits `EdDSA` so that
verifiers written before RFC 9864 keep working (docs/protocol.md, "JWS algorithm").
"""

from __future__ import annotations

import dataclasses
import json
import typing

from edge_agent.protocol import b64
from edge_agent.protocol import keys

ALG = "EdDSA"  # what v1 signs with
ACCEPTED_ALGS = frozenset({"EdDSA", "Ed25519"})  # RFC 8037 and RFC 9864 names of Ed25519
_HEADER_KEYS = frozenset({"alg", "kid", "typ"})


class JWSError(ValueError):
    """A compact JWS that cannot be parsed; `reason` is a short machine-readable label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Parsed:
    header: dict[str, typing.Any]
    payload: bytes
    signing_input: bytes
    signature: bytes

    @property
    def kid(self) -> str:
        return str(self.header["kid"])


def _encode_header(kid: str, typ: str) -> str:
    header = json.dumps({"alg": ALG, "kid": kid, "typ": typ}, separators=(",", ":"))
    return b64.encode(header.encode("utf-8"))


def sign(payload: bytes, key: keys.SigningKey, kid: str, typ: str) -> str:
    signing_input = f"{_encode_header(kid, typ)}.{b64.encode(payload)}".encode("ascii")
    return f"{signing_input.decode('ascii')}.{b64.encode(key.sign(signing_input))}"


def parse(compact: str | bytes, max_bytes: int) -> Parsed:
    """Split and decode; checks shape and header but not the signature (see `verify`)."""
    if len(compact) > max_bytes:
        raise JWSError("oversize", f"JWS of {len(compact)} bytes exceeds {max_bytes}")
    if isinstance(compact, bytes):
        try:
            compact = compact.decode("ascii")
        except UnicodeDecodeError as exc:
            raise JWSError("malformed", "JWS is not ASCII") from exc
    parts = compact.split(".")
    if len(parts) != 3:
        raise JWSError("malformed", f"JWS compact form has 3 parts, got {len(parts)}")
    try:
        header_bytes = b64.decode(parts[0])
        payload = b64.decode(parts[1])
        signature = b64.decode(parts[2])
    except ValueError as exc:
        raise JWSError("malformed", f"JWS part is not base64url: {exc}") from exc
    try:
        header = json.loads(header_bytes)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise JWSError("bad_header", "JWS header is not JSON") from exc
    if not isinstance(header, dict) or set(header) - _HEADER_KEYS:
        raise JWSError("bad_header", "JWS header has unexpected members")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ACCEPTED_ALGS:
        raise JWSError("bad_header", "JWS alg must be EdDSA or Ed25519")
    if not isinstance(header.get("kid"), str) or not isinstance(header.get("typ"), str):
        raise JWSError("bad_header", "JWS header needs string kid and typ")
    if len(signature) != keys.SIGNATURE_BYTES:
        raise JWSError("malformed", "Ed25519 signature must be 64 bytes")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return Parsed(header=header, payload=payload, signing_input=signing_input, signature=signature)


def verify(parsed: Parsed, public: bytes) -> bool:
    return keys.verify(public, parsed.signing_input, parsed.signature)
