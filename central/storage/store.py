"""The records the store returns and takes, and the errors it raises. The store itself is
`database.Database`, written once for SQLite and PostgreSQL (`stores.make` opens the one a
configuration names)."""

from __future__ import annotations

import dataclasses
import typing


class Conflict(Exception):
    """A uniqueness rule refused the write (e.g. a second check-in for the same slot)."""


class NotFound(Exception):
    """The record the write refers to does not exist."""


class CredentialInactive(Exception):
    """The remembered-browser credential was revoked, erased or has expired."""


@dataclasses.dataclass(frozen=True)
class Room:
    site: str
    room: str
    name: str
    lat: float | None
    lon: float | None
    radius_m: float


@dataclasses.dataclass(frozen=True)
class Device:
    site: str
    room: str
    device: str
    ed25519: bytes | None
    x25519: bytes | None
    enroll_code: str | None
    enroll_expires_ms: int | None
    enrolled_at: int | None
    last_seq: int
    last_hash: str | None
    last_proof_at: int | None
    last_iat: int | None
    last_slot: int | None
    slot_s: int | None
    otp_step_s: int | None
    clock_offset_ms: int | None
    online: bool
    status_at: int | None
    last_verdict: str | None = None
    otp_digest: str | None = None  # from the device's last proof; None: sha1 (RFC 6238)


@dataclasses.dataclass(frozen=True)
class DeviceKey:
    """One key epoch of a device: its keys sign every seq from `from_seq` until the next
    epoch's. Old epochs are kept, so proofs queued before a change still verify by seq."""

    id: int
    site: str
    device: str
    room: str
    from_seq: int
    ed25519: bytes
    x25519: bytes
    kind: str  # enroll | rotate | re_enroll
    added_at: int
    evidence: str  # the signed key-change JWS or the enrollment request that introduced it
    note: str = ""  # why the evidence is weaker than a message signed by the key, if it is


@dataclasses.dataclass(frozen=True)
class ProofRow:
    site: str
    device: str
    seq: int
    slot: int
    iat: int
    received_at: int
    jws: str
    hash: str
    gap_before: bool
    verdict: str | None = None
    reasons: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Alert:
    id: int
    site: str
    device: str
    kind: str  # displaced | offline | clock | gap | fork
    reason: str
    raised_at: int
    cleared_at: int | None


@dataclasses.dataclass(frozen=True)
class ChainEvent:
    """A gap (seqs first..last never received) or a fork (a second proof for seq `first`)."""

    id: int
    site: str
    device: str
    kind: str  # gap | fork
    first: int
    last: int
    detail: str  # fork: the other proof's JWS; gap: empty
    detected_at: int
    resolved_at: int | None


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    id: int
    at: int
    actor: str  # "token:<id>" (role) for the API, "cli" for the command line
    action: str
    target: str
    detail: str
    site: str | None = None  # the site it concerns; None: several, or before sites were sealed


@dataclasses.dataclass(frozen=True)
class AdminToken:
    id: str  # the first 12 hex digits of the token's SHA-256: names it, reveals nothing
    role: str
    name: str
    created_at: int
    courses: tuple[str, ...] = ()  # "site/course" a teacher token is limited to
    site: str | None = None  # the one site it acts in; None: an operator (or not yet migrated)


@dataclasses.dataclass(frozen=True)
class TokenGrant:
    """What a bearer token may do: its role and the one site it acts in (None: an operator,
    or a token from before sites were sealed, which central refuses to start with)."""

    role: str
    site: str | None


TOKEN_ID_CHARS = 12


# Notes of key-history entries whose evidence is not an enrollment request signed by the key.
NOTE_UNSIGNED_REQUEST = (
    "enrollment request not signed by the device key (an agent older than signed requests):"
    " its HMAC under the burnt one-time code is central's word only"
)
NOTE_BACKFILL_PROOF = (
    "enrolled before central kept enrollment requests: evidence is the earliest stored proof"
    " signed by this key"
)
NOTE_BACKFILL_NONE = (
    "enrolled before central kept enrollment requests, and no proof signed by this key is stored"
)


def tokens_with_courses(
    rows: typing.Sequence[typing.Any], scopes: typing.Sequence[typing.Any]
) -> list[AdminToken]:
    """Admin tokens (hash, role, name, created_at, site rows) with the courses each teacher
    token is limited to ((hash, site, course) rows)."""
    courses: dict[str, list[str]] = {}
    for token_hash, site, course in scopes:
        courses.setdefault(token_hash, []).append(f"{site}/{course}")
    return [
        AdminToken(
            row[0][:TOKEN_ID_CHARS],
            row[1],
            row[2],
            row[3],
            tuple(sorted(courses.get(row[0], []))),
            row[4],
        )
        for row in rows
    ]


@dataclasses.dataclass(frozen=True)
class Student:
    site: str
    student_id: str
    pin_hash: str


@dataclasses.dataclass(frozen=True)
class Checkin:
    id: int
    site: str
    room: str
    device: str
    student_id: str
    slot: int
    method: str
    created_at: int
    token_age_ms: int
    status: str = "present"  # present | late | flagged (as decided at check-in)
    flags: tuple[str, ...] = ()
    evidence: dict[str, typing.Any] = dataclasses.field(default_factory=dict)
    session_id: int | None = None
    session_date: str | None = None
    checked_out_at: int | None = None
    record_jws: str | None = None


@dataclasses.dataclass(frozen=True)
class NewCheckin:
    site: str
    room: str
    device: str
    student_id: str
    slot: int
    method: str
    created_at: int
    token_age_ms: int
    status: str
    flags: tuple[str, ...]
    evidence: dict[str, typing.Any]
    browser: str | None
    session_id: int | None
    session_date: str | None


def stored_checkin(new: NewCheckin, new_id: int) -> Checkin:
    fields = {f.name: getattr(new, f.name) for f in dataclasses.fields(new)}  # shallow
    fields.pop("browser")
    return Checkin(id=new_id, **fields)


@dataclasses.dataclass(frozen=True)
class CheckinContext:
    """What `record_checkin` reads in the same transaction as its insert."""

    credential_id: str | None  # a remembered-browser credential to check; None: signed in by PIN
    browser: str
    student_id: str
    session_id: int | None
    session_date: str | None
    room: str
    since_ms: int  # without a session: same-browser check-ins in the room since then count
    now_ms: int


# Builds the row from the number of other students the same browser checked in.
DecideCheckin = typing.Callable[[int], NewCheckin]


@dataclasses.dataclass(frozen=True)
class Course:
    site: str
    course: str
    name: str
    timezone: str


@dataclasses.dataclass(frozen=True)
class Override:
    """A teacher's decision on one student in one occurrence: excused, or a flagged check-in
    resolved to present/late."""

    session_id: int
    session_date: str
    student_id: str
    status: str
    note: str
    set_by: str
    set_at: int


@dataclasses.dataclass(frozen=True)
class VerifyLink:
    id: int
    checkin_id: int
    created_at: int
    expires_at: int
    revoked_at: int | None


@dataclasses.dataclass(frozen=True)
class Webhook:
    id: int
    url: str
    events: tuple[str, ...]  # checkin | session_closed
    description: str
    secret: str  # the HMAC key; shown to the admin once, kept to sign every delivery
    created_at: int
    site: str | None = None  # receives only this site's events; None: every site's (operators)


@dataclasses.dataclass(frozen=True)
class WebhookDelivery:
    """One event for one webhook: pending while next_attempt_at is set, delivered once
    delivered_at is, failed (given up) when neither is."""

    id: int
    webhook_id: int
    event_id: str
    event_type: str
    body: str  # the exact JSON sent on every attempt
    created_at: int
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: int | None
    delivered_at: int | None
