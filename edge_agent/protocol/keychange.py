"""A device's key change (the `rotate_keys` command), announced to central on `.../enroll`.

A compact JWS (EdDSA, `kid` = device, `typ` `roomproof-keychange+jws`) signed with the OLD
Ed25519 key over `{"v": 1, "type": "key_change", "site", "room", "device", "from_seq", "prev",
"ed25519", "x25519", "iat", "pop"}`: `prev` is the old public key (the signer), `ed25519` and
`x25519` the new ones, `from_seq` the first proof seq the new key signs, and `pop` the new
key's Ed25519 signature over `pop_input(...)`, which proves possession of the new key (so a
device cannot claim a key it does not hold, and nobody can bind a key without the old one).
"""

from __future__ import annotations

import dataclasses
import json

from edge_agent.protocol import b64
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import names

TYP = "roomproof-keychange+jws"
DOMAIN = "roomproof-keychange/v1"
MAX_BYTES = 4096
MAX_SEQ = 2**53
_MEMBERS = frozenset(
    {"v", "type", "site", "room", "device", "from_seq", "prev", "ed25519", "x25519", "iat", "pop"}
)


class KeyChangeError(ValueError):
    """A key change that cannot be decoded; `reason` is a short machine-readable label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class KeyChange:
    site: str
    room: str
    device: str
    from_seq: int
    prev: bytes
    ed25519: bytes
    x25519: bytes
    iat: int
    pop: bytes


def pop_input(change: KeyChange) -> bytes:
    """What the new key signs: every field but `pop`, newline-joined after a domain label."""
    return "\n".join(
        [
            DOMAIN,
            change.site,
            change.room,
            change.device,
            str(change.from_seq),
            b64.encode(change.prev),
            b64.encode(change.ed25519),
            b64.encode(change.x25519),
            str(change.iat),
        ]
    ).encode()


def sign(
    old: keys.SigningKey,
    new: keys.SigningKey,
    new_x25519: bytes,
    site: str,
    room: str,
    device: str,
    from_seq: int,
    iat: int,
) -> str:
    unsigned = KeyChange(
        site=names.validate("site", site),
        room=names.validate("room", room),
        device=names.validate("device", device),
        from_seq=from_seq,
        prev=old.public,
        ed25519=new.public,
        x25519=new_x25519,
        iat=iat,
        pop=b"",
    )
    body = {
        "v": 1,
        "type": "key_change",
        "site": site,
        "room": room,
        "device": device,
        "from_seq": from_seq,
        "prev": b64.encode(old.public),
        "ed25519": b64.encode(new.public),
        "x25519": b64.encode(new_x25519),
        "iat": iat,
        "pop": b64.encode(new.sign(pop_input(unsigned))),
    }
    payload = json.dumps(body, separators=(",", ":")).encode()
    return jws.sign(payload, old, kid=device, typ=TYP)


def is_key_change(payload: bytes) -> bool:
    """Whether a message on `.../enroll` claims to be a key change: a JWS of this type.
    Anything else is treated (and refused, if need be) as an enrollment request."""
    try:
        parsed = jws.parse(payload, MAX_BYTES)
    except jws.JWSError:
        return False
    return parsed.header.get("typ") == TYP


def decode(payload: bytes) -> tuple[jws.Parsed, KeyChange]:
    """Shape only, signatures not checked (see `verify`); raises KeyChangeError with reason
    `oversize`, `malformed`, `bad_header` or `schema`."""
    try:
        parsed = jws.parse(payload, MAX_BYTES)
    except jws.JWSError as exc:
        raise KeyChangeError(exc.reason, str(exc)) from exc
    if parsed.header.get("typ") != TYP:
        raise KeyChangeError("bad_header", f"JWS typ must be {TYP}")
    try:
        data = json.loads(parsed.payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise KeyChangeError("malformed", "payload is not JSON") from exc
    if not isinstance(data, dict) or set(data) != _MEMBERS:
        raise KeyChangeError("schema", "key change has the wrong members")
    if data["v"] != 1 or data["type"] != "key_change":
        raise KeyChangeError("schema", "not a version 1 key change")
    for field in ("from_seq", "iat"):
        value = data[field]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < MAX_SEQ:
            raise KeyChangeError("schema", f"{field} must be a positive integer")
    try:
        for kind in ("site", "room", "device"):
            if not isinstance(data[kind], str):
                raise ValueError(f"{kind} must be a string")
            names.validate(kind, data[kind])
        raw = {k: b64.decode(data[k]) for k in ("prev", "ed25519", "x25519", "pop")}
    except (ValueError, TypeError) as exc:
        raise KeyChangeError("schema", f"key change is malformed: {exc}") from exc
    if any(len(raw[k]) != keys.PUBLIC_BYTES for k in ("prev", "ed25519", "x25519")):
        raise KeyChangeError("schema", "keys must be 32 bytes")
    if len(raw["pop"]) != keys.SIGNATURE_BYTES:
        raise KeyChangeError("schema", "pop must be a 64-byte signature")
    if parsed.kid != data["device"]:
        raise KeyChangeError("bad_header", "kid must be the device")
    change = KeyChange(
        site=data["site"],
        room=data["room"],
        device=data["device"],
        from_seq=data["from_seq"],
        prev=raw["prev"],
        ed25519=raw["ed25519"],
        x25519=raw["x25519"],
        iat=data["iat"],
        pop=raw["pop"],
    )
    return parsed, change


def verify(parsed: jws.Parsed, change: KeyChange, current: bytes) -> bool:
    """Signed by `current` (the key central holds), naming it as `prev`, and with a valid
    proof of possession by the new key."""
    return (
        change.prev == current
        and change.ed25519 != current
        and jws.verify(parsed, current)
        and keys.verify(change.ed25519, pop_input(change), change.pop)
    )
