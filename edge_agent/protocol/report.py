"""Device -> central reports, signed by the device like its proofs: status, telemetry and
command results.

Each is a compact JWS (EdDSA, kid = the device's name) whose `typ` names the kind:

- `roomproof-status+jws` on `.../status` (retained): `{"v": 1, "site", "device", "boot",
  "iat", "state": "online" | "offline"}`. The `offline` last will is signed at connect time
  with the same `boot` and `iat` as the `online` published right after the connection.
- `roomproof-telemetry+jws` on `.../telemetry`: common claims plus `uptime_s`,
  `outbox_depth` {kind: count}, `dropped`, `clock`, `sensors`.
- `roomproof-command-result+jws` on `.../telemetry`: common claims plus `nonce`, `kind`,
  `outcome` ("applied" | "rejected") and `reason`.

`boot` is the 16 hex digits the agent draws at each start (the same as in its proofs), `iat`
milliseconds since the epoch on the device's clock. Central verifies the signature with the
device's enrolled key and ignores (and counts) anything else.
"""

from __future__ import annotations

import typing

import pydantic

from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import names

MAX_BYTES = 16 * 1024
STATUS = "roomproof-status+jws"
TELEMETRY = "roomproof-telemetry+jws"
COMMAND_RESULT = "roomproof-command-result+jws"
_STRICT = pydantic.ConfigDict(strict=True, extra="forbid", frozen=True)

Name = typing.Annotated[str, pydantic.AfterValidator(lambda v: names.validate("name", v))]
Boot = typing.Annotated[str, pydantic.StringConstraints(pattern=r"^[0-9a-f]{16}$")]
Count = typing.Annotated[int, pydantic.Field(ge=0, lt=2**53)]


class ReportError(ValueError):
    """A report that cannot be decoded; `reason` is a short label for rejection counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Common(pydantic.BaseModel):
    model_config = _STRICT
    v: typing.Literal[1] = 1
    site: Name
    device: Name
    boot: Boot
    iat: int = pydantic.Field(ge=0, lt=2**53)


class Status(Common):
    state: typing.Literal["online", "offline"]


class Telemetry(Common):
    uptime_s: Count | None = None
    outbox_depth: dict[typing.Annotated[str, pydantic.StringConstraints(max_length=32)], Count]
    dropped: dict[str, typing.Any] = pydantic.Field(default_factory=dict)
    clock: dict[str, typing.Any] = pydantic.Field(default_factory=dict)
    sensors: dict[str, typing.Any] = pydantic.Field(default_factory=dict)


class CommandResult(Common):
    nonce: typing.Annotated[str, pydantic.StringConstraints(max_length=64)] | None
    kind: typing.Annotated[str, pydantic.StringConstraints(max_length=32)] | None
    outcome: typing.Literal["applied", "rejected"]
    reason: typing.Annotated[str, pydantic.StringConstraints(max_length=100)] = ""


Report = Status | Telemetry | CommandResult
MODELS: dict[str, type[Status] | type[Telemetry] | type[CommandResult]] = {
    STATUS: Status,
    TELEMETRY: Telemetry,
    COMMAND_RESULT: CommandResult,
}
TYPS: dict[type[pydantic.BaseModel], str] = {model: typ for typ, model in MODELS.items()}


def sign(claims: Report, key: keys.SigningKey) -> bytes:
    payload = claims.model_dump_json().encode("utf-8")
    return jws.sign(payload, key, kid=claims.device, typ=TYPS[type(claims)]).encode("ascii")


def decode(compact: bytes, allowed: frozenset[str]) -> tuple[jws.Parsed, Report]:
    """Parse and validate the shape (typ among `allowed`); the caller verifies the signature
    with the device's enrolled key. ReportError reasons: unsigned (not a JWS at all),
    oversize, malformed, bad_header, schema."""
    if not compact.startswith(b"eyJ"):  # every JWS header starts with `{"`
        raise ReportError("unsigned", "not a signed report")
    try:
        parsed = jws.parse(compact, MAX_BYTES)
    except jws.JWSError as exc:
        raise ReportError(exc.reason, str(exc)) from exc
    typ = parsed.header.get("typ")
    if typ not in allowed:
        raise ReportError("bad_header", f"report typ must be one of {sorted(allowed)}")
    try:
        claims = MODELS[typ].model_validate_json(parsed.payload)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        raise ReportError("schema", f"report claim {where}: {first['msg']}") from exc
    if claims.device != parsed.kid:
        raise ReportError("schema", "report kid differs from its device claim")
    return parsed, claims
