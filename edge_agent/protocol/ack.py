"""Central -> device acknowledgements on `roomproof/v1/{site}/{device}/cmd`, signed by central.

An ack tells a device which of its proofs central has settled: stored (now or before), or
refused for a reason that can never change (so keeping them would only block the outbox).
Only then may the device delete them: a broker's PUBACK says nothing about central.

A compact JWS (EdDSA, kid `central`, typ `roomproof-ack+jws`) over
`{"v": 1, "type": "ack", "site", "device", "key", "stored", "missing", "pending", "iat", "exp"}`:
`key` is the lowercase hex SHA-256 of the device's Ed25519 public key (an ack for an earlier
device of the same name, or for a key the device no longer holds, is not for it); `stored`,
`missing` and `pending` are lists of `[first, last]` seq ranges (inclusive). `missing`: seqs
central lacks below ones it has (a gap: re-send them now); `pending`: seqs central received but
cannot store yet (stamped too far in the future: keep them, re-send later).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing

from edge_agent.protocol import jws
from edge_agent.protocol import keys

TYP = "roomproof-ack+jws"
KID = "central"
MAX_BYTES = 8192
MAX_RANGES = 64
LIFETIME_MS = 3600 * 1000  # a true statement, but a replay is bounded anyway
MAX_SEQ = 2**53
Ranges = tuple[tuple[int, int], ...]
Reason = typing.Literal[
    "malformed", "bad_signature", "wrong_device", "wrong_key", "expired", "schema"
]


class AckError(ValueError):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


@dataclasses.dataclass(frozen=True)
class Ack:
    stored: Ranges
    missing: Ranges
    pending: Ranges
    iat: int
    exp: int

    def covers(self, seq: int) -> bool:
        return covered(self.stored, seq)


def key_hash(public: bytes) -> str:
    """What an ack's `key` holds: the hex SHA-256 of the device's Ed25519 public key."""
    return hashlib.sha256(public).hexdigest()


def compress(seqs: typing.Iterable[int]) -> Ranges:
    """Sorted, merged `[first, last]` ranges of a set of seqs."""
    out: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return tuple((a, b) for a, b in out)


def covered(ranges: Ranges, seq: int) -> bool:
    return any(first <= seq <= last for first, last in ranges)


def _check_ranges(value: object, name: str) -> Ranges:
    if not isinstance(value, list) or len(value) > MAX_RANGES:
        raise AckError("schema", f"{name}: a list of at most {MAX_RANGES} ranges")
    found: list[tuple[int, int]] = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(type(n) is int for n in item)
            or not 1 <= item[0] <= item[1] <= MAX_SEQ
        ):
            raise AckError("schema", f"{name}: each range is [first, last], 1 <= first <= last")
        found.append((item[0], item[1]))
    return tuple(found)


def sign(
    key: keys.SigningKey,
    site: str,
    device: str,
    device_public: bytes,
    stored: Ranges,
    missing: Ranges,
    pending: Ranges,
    iat: int,
) -> str:
    """The signed ack (at most MAX_RANGES ranges of each kind: the caller splits)."""
    body = {
        "v": 1,
        "type": "ack",
        "site": site,
        "device": device,
        "key": key_hash(device_public),
        "stored": [list(r) for r in stored],
        "missing": [list(r) for r in missing],
        "pending": [list(r) for r in pending],
        "iat": iat,
        "exp": iat + LIFETIME_MS,
    }
    for name in ("stored", "missing", "pending"):
        _check_ranges(body[name], name)
    return jws.sign(json.dumps(body, separators=(",", ":")).encode(), key, kid=KID, typ=TYP)


def is_ack(payload: bytes) -> bool:
    """Whether a `cmd` message claims to be an ack (rather than a command or a reply)."""
    try:
        parsed = jws.parse(payload, MAX_BYTES)
    except jws.JWSError:
        return False
    return parsed.header.get("typ") == TYP


def verify(
    payload: bytes,
    central_public: bytes,
    site: str,
    device: str,
    device_public: bytes,
    now_ms: int,
) -> Ack:
    """The ack, or AckError(reason): malformed, bad_signature, wrong_device, wrong_key,
    expired, schema. No check of `iat` against the device's clock: a device running behind
    still takes what central stored, and a statement of what was stored stays true."""
    try:
        parsed = jws.parse(payload, MAX_BYTES)
    except jws.JWSError as exc:
        raise AckError("malformed", f"not a JWS: {exc}") from exc
    if parsed.header.get("typ") != TYP or parsed.kid != KID:
        raise AckError("malformed", "wrong JWS header")
    if not jws.verify(parsed, central_public):
        raise AckError("bad_signature", "not signed by central")
    try:
        data = json.loads(parsed.payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise AckError("malformed", "payload is not JSON") from exc
    if not isinstance(data, dict) or data.get("v") != 1 or data.get("type") != "ack":
        raise AckError("malformed", "not an ack")
    if (data.get("site"), data.get("device")) != (site, device):
        raise AckError("wrong_device", "the ack is for another device")
    if data.get("key") != key_hash(device_public):
        raise AckError("wrong_key", "the ack is for another key of this device")
    iat, exp = data.get("iat"), data.get("exp")
    if type(iat) is not int or type(exp) is not int or not 0 < exp - iat <= LIFETIME_MS:
        raise AckError("schema", "iat/exp are not a valid lifetime")
    if exp <= now_ms:
        raise AckError("expired", "the ack has expired")
    return Ack(
        stored=_check_ranges(data.get("stored"), "stored"),
        missing=_check_ranges(data.get("missing"), "missing"),
        pending=_check_ranges(data.get("pending"), "pending"),
        iat=iat,
        exp=exp,
    )
