"""Enrollment: a device proves it holds the bundle's one-time code without sending it, and
that it holds the Ed25519 key it enrolls.

The request is JSON with an HMAC under the one-time code (which only central can check, and
which is burnt afterwards), sent as the payload of a compact JWS (`typ` `roomproof-enroll+jws`,
`kid` = device) signed with the new Ed25519 key it carries: proof of possession that anyone
holding the request can check for ever, so central keeps it as the key's evidence. Agents
older than that send the bare JSON, which central still accepts (marked as unsigned).

A re-enrollment (central's `re_enroll` command) uses the same request with one more member,
`from_seq`: the first proof seq the new keys sign (the chain continues across it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import time
import typing

from edge_agent.protocol import b64
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import names

DOMAIN = "roomproof-enroll/v1"
REQUEST_TYP = "roomproof-enroll+jws"
REPLY_TYP = "roomproof-cmd+jws"
CENTRAL_KID = "central"
MAX_BYTES = 4096


class EnrollError(ValueError):
    """An enrollment message that is malformed or not genuine."""


class BadSignature(EnrollError):
    """A signed enrollment request whose signature does not verify with the key it carries."""


@dataclasses.dataclass(frozen=True)
class Request:
    site: str
    room: str
    device: str
    ed25519: bytes
    x25519: bytes
    nonce: str
    ts: int
    mac: bytes
    from_seq: int | None = None  # re-enrollment only
    signed: bool = False  # a JWS signed by `ed25519` (proof of possession), not bare JSON


def mac_input(
    site: str,
    room: str,
    device: str,
    ed25519: str,
    x25519: str,
    nonce: str,
    ts: int,
    from_seq: int | None = None,
) -> bytes:
    parts = [DOMAIN, site, room, device, ed25519, x25519, nonce, str(ts)]
    if from_seq is not None:
        parts.append(str(from_seq))
    return "\n".join(parts).encode()


def _mac(code: str, message: bytes) -> bytes:
    return hmac.new(b64.decode(code), message, hashlib.sha256).digest()


def make_request(
    code: str,
    site: str,
    room: str,
    device: str,
    ed_pub: bytes,
    x_pub: bytes,
    from_seq: int | None = None,
    ts: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """The bare JSON request (what agents older than signed requests send); `ts` (unix ms)
    and the 16-byte `nonce` default to now and random bytes."""
    fields: dict[str, typing.Any] = {
        "site": names.validate("site", site),
        "room": names.validate("room", room),
        "device": names.validate("device", device),
        "ed25519": b64.encode(ed_pub),
        "x25519": b64.encode(x_pub),
        "nonce": b64.encode(os.urandom(16) if nonce is None else nonce),
        "ts": int(time.time() * 1000) if ts is None else ts,
    }
    if from_seq is not None:
        fields["from_seq"] = from_seq
    mac = _mac(code, mac_input(**fields))
    return json.dumps({"v": 1, **fields, "mac": b64.encode(mac)}, separators=(",", ":")).encode()


def sign_request(
    code: str,
    site: str,
    room: str,
    device: str,
    signing: keys.SigningKey,
    x_pub: bytes,
    from_seq: int | None = None,
    ts: int | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """The request as v1 agents send it: the JSON of `make_request` as the payload of a JWS
    signed by the Ed25519 key it enrolls (ASCII bytes of the compact serialization)."""
    body = make_request(code, site, room, device, signing.public, x_pub, from_seq, ts, nonce)
    return jws.sign(body, signing, kid=device, typ=REQUEST_TYP).encode("ascii")


def parse_request(payload: bytes) -> Request:
    """A signed request (JWS, its signature checked against the key it carries) or a bare
    JSON one (older agents; `signed` False). Raises EnrollError, BadSignature for a JWS
    whose signature does not verify."""
    if len(payload) > MAX_BYTES:
        raise EnrollError("enrollment request is too large")
    if payload[:1] == b"{":
        return _parse_json(payload)
    try:
        parsed = jws.parse(payload, MAX_BYTES)
    except jws.JWSError as exc:
        raise EnrollError(f"enrollment request is neither JSON nor a JWS: {exc}") from exc
    if parsed.header.get("typ") != REQUEST_TYP:
        raise EnrollError(f"enrollment request JWS typ must be {REQUEST_TYP}")
    request = _parse_json(parsed.payload)
    if parsed.kid != request.device:
        raise EnrollError("enrollment request kid must be its device")
    if not jws.verify(parsed, request.ed25519):
        raise BadSignature("enrollment request is not signed by the Ed25519 key it carries")
    return dataclasses.replace(request, signed=True)


def _parse_json(payload: bytes) -> Request:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise EnrollError("enrollment request is not JSON") from exc
    expected = {"v", "site", "room", "device", "ed25519", "x25519", "nonce", "ts", "mac"}
    if not isinstance(data, dict) or set(data) - {"from_seq"} != expected or data["v"] != 1:
        raise EnrollError("enrollment request has the wrong members or version")
    from_seq = data.get("from_seq")
    if from_seq is not None and (
        not isinstance(from_seq, int) or isinstance(from_seq, bool) or not 0 < from_seq < 2**53
    ):
        raise EnrollError("enrollment request from_seq must be a positive integer")
    try:
        for kind in ("site", "room", "device"):
            names.validate(kind, data[kind])
        if not isinstance(data["ts"], int) or not isinstance(data["nonce"], str):
            raise EnrollError("enrollment request ts/nonce have the wrong type")
        request = Request(
            site=data["site"],
            room=data["room"],
            device=data["device"],
            ed25519=b64.decode(data["ed25519"]),
            x25519=b64.decode(data["x25519"]),
            nonce=data["nonce"],
            ts=data["ts"],
            mac=b64.decode(data["mac"]),
            from_seq=from_seq,
        )
    except (ValueError, TypeError) as exc:
        raise EnrollError(f"enrollment request is malformed: {exc}") from exc
    if len(request.ed25519) != 32 or len(request.x25519) != 32 or len(request.mac) != 32:
        raise EnrollError("enrollment request keys or mac have the wrong length")
    if len(request.nonce) > 64:
        raise EnrollError("enrollment request nonce is too long")
    return request


def check_mac(request: Request, code: str) -> bool:
    try:
        expected = _mac(
            code,
            mac_input(
                request.site,
                request.room,
                request.device,
                b64.encode(request.ed25519),
                b64.encode(request.x25519),
                request.nonce,
                request.ts,
                request.from_seq,
            ),
        )
    except ValueError:
        return False
    return hmac.compare_digest(expected, request.mac)


def sign_reply(key: keys.SigningKey, payload: dict[str, typing.Any]) -> str:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return jws.sign(body, key, kid=CENTRAL_KID, typ=REPLY_TYP)


def verify_reply(compact: str | bytes, central_public: bytes) -> dict[str, typing.Any]:
    try:
        parsed = jws.parse(compact, MAX_BYTES)
    except jws.JWSError as exc:
        raise EnrollError(f"reply is not a JWS: {exc}") from exc
    if parsed.header.get("typ") != REPLY_TYP or parsed.kid != CENTRAL_KID:
        raise EnrollError("reply has the wrong JWS header")
    if not jws.verify(parsed, central_public):
        raise EnrollError("reply signature does not verify with central's key")
    try:
        data = json.loads(parsed.payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise EnrollError("reply payload is not JSON") from exc
    if not isinstance(data, dict) or data.get("v") != 1 or not isinstance(data.get("type"), str):
        raise EnrollError("reply payload has the wrong shape")
    return data
