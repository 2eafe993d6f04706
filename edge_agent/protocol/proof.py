"""The presence proof: "device D in room R at time T displayed token K and saw this"."""

from __future__ import annotations

import typing

import pydantic

from edge_agent.protocol import b64
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import names

MAX_BYTES = 16384
TYP = "roomproof-proof+jws"
_STRICT = pydantic.ConfigDict(strict=True, extra="forbid", frozen=True)

Name = typing.Annotated[str, pydantic.AfterValidator(lambda v: names.validate("name", v))]
Hex64 = typing.Annotated[str, pydantic.StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def _canonical_b64(text: str) -> str:
    b64.decode(text)  # ValueError (a schema error) for non-zero unused bits
    return text


# 86 characters of base64url, canonical (zero unused bits), as every base64url of the protocol.
B64Sig = typing.Annotated[
    str,
    pydantic.StringConstraints(pattern=r"^[A-Za-z0-9_-]{86}$"),
    pydantic.AfterValidator(_canonical_b64),
]
Bssid = typing.Annotated[str, pydantic.StringConstraints(pattern=r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")]
ShortText = typing.Annotated[str, pydantic.StringConstraints(max_length=64)]


class ProofError(ValueError):
    """A proof that cannot be decoded; `reason` is a short label for rejection counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Clock(pydantic.BaseModel):
    model_config = _STRICT
    source: typing.Literal["gps", "ntp", "none"]
    uncertainty_ms: int = pydantic.Field(ge=0, le=86_400_000)


class Gps(pydantic.BaseModel):
    model_config = _STRICT
    lat: float = pydantic.Field(ge=-90, le=90)
    lon: float = pydantic.Field(ge=-180, le=180)
    accuracy_m: float | None = pydantic.Field(default=None, ge=0, le=1_000_000)
    fix: typing.Literal["none", "2d", "3d"]
    satellites: int = pydantic.Field(ge=0, le=255)
    time: int | None = None


class WifiAP(pydantic.BaseModel):
    model_config = _STRICT
    bssid: Bssid
    ssid: typing.Annotated[str, pydantic.StringConstraints(max_length=128)] | None = None
    rssi: int = pydantic.Field(ge=-127, le=20)
    channel: int | None = pydantic.Field(default=None, ge=0, le=233)
    seen: int = pydantic.Field(ge=1)


class BleBeacon(pydantic.BaseModel):
    model_config = _STRICT
    kind: ShortText
    id: typing.Annotated[str, pydantic.StringConstraints(max_length=256)]
    rssi: int = pydantic.Field(ge=-127, le=20)
    tx_power: int | None = pydantic.Field(default=None, ge=-127, le=127)
    seen: int = pydantic.Field(ge=1)


class Env(pydantic.BaseModel):
    model_config = _STRICT
    gps: Gps | None = None
    wifi: list[WifiAP] = pydantic.Field(default_factory=list, max_length=64)
    ble: list[BleBeacon] = pydantic.Field(default_factory=list, max_length=64)
    window_s: int | None = pydantic.Field(default=None, ge=0, le=3600)
    missing: dict[ShortText, ShortText] = pydantic.Field(default_factory=dict, max_length=8)


class Claims(pydantic.BaseModel):
    model_config = _STRICT
    v: typing.Literal[1] = 1
    site: Name
    room: Name
    device: Name
    seq: int = pydantic.Field(ge=1, lt=2**53)
    boot: typing.Annotated[str, pydantic.StringConstraints(pattern=r"^[0-9a-f]{16}$")]
    iat: int = pydantic.Field(ge=0, lt=2**53)
    clock: Clock
    slot: int = pydantic.Field(ge=0, lt=2**53)
    slot_s: int = pydantic.Field(ge=5, le=300)
    otp_step_s: int = pydantic.Field(ge=10, le=300)
    # The HMAC of the one-time code shown beside the QR; absent means "sha1" (RFC 6238's
    # default), and devices omit it for sha1 so that their proofs stay what they were.
    otp_digest: typing.Literal["sha1", "sha256"] | None = None
    qr: B64Sig
    prev: Hex64
    env: Env = pydantic.Field(default_factory=Env)
    # The device's clock was stepped back by this much since its previous proof: this proof's
    # iat (and slot) may be below the previous proof's by at most this (docs/protocol.md).
    clock_step_ms: int | None = pydantic.Field(None, ge=1, lt=2**53)


def sign(claims: Claims, key: keys.SigningKey) -> str:
    payload = claims.model_dump_json(exclude_none=True).encode("utf-8")
    return jws.sign(payload, key, kid=claims.device, typ=TYP)


def decode(compact: str | bytes, max_bytes: int = MAX_BYTES) -> tuple[jws.Parsed, Claims]:
    """Parse and validate the shape; the caller verifies the signature with the enrolled key."""
    try:
        parsed = jws.parse(compact, max_bytes)
    except jws.JWSError as exc:
        raise ProofError(exc.reason, str(exc)) from exc
    if parsed.header.get("typ") != TYP:
        raise ProofError("bad_header", f"proof typ must be {TYP}")
    try:
        claims = Claims.model_validate_json(parsed.payload)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        raise ProofError("schema", f"proof claim {where}: {first['msg']}") from exc
    if claims.device != parsed.kid:
        raise ProofError("schema", "proof kid differs from its device claim")
    return parsed, claims
