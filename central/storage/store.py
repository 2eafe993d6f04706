"""The storage interface central's logic is written against, and the records it returns;
`central.storage` implements it once for SQLite and PostgreSQL (`stores.make` picks one)."""

from __future__ import annotations

import dataclasses
import typing

from central.domain import environment
from central.domain import timetable


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


class Store(typing.Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def add_site(self, site: str, name: str) -> None: ...
    async def add_room(
        self,
        site: str,
        room: str,
        name: str,
        lat: float | None,
        lon: float | None,
        radius_m: float,
    ) -> None: ...
    async def get_room(self, site: str, room: str) -> Room | None: ...
    async def update_room(
        self, site: str, room: str, lat: float | None, lon: float | None, radius_m: float
    ) -> None: ...

    async def add_device(
        self, site: str, room: str, device: str, code: str, expires_ms: int
    ) -> None: ...
    async def get_device(self, site: str, device: str) -> Device | None: ...
    async def list_devices(self, site: str | None = None) -> list[Device]: ...
    async def room_devices(self, site: str, room: str) -> list[Device]: ...
    async def bind_device(
        self,
        site: str,
        device: str,
        ed25519: bytes,
        x25519: bytes,
        now_ms: int,
        evidence: str = "",
        note: str = "",
    ) -> None: ...
    async def set_online(self, site: str, device: str, online: bool, now_ms: int) -> bool: ...
    async def revoke_device(self, site: str, device: str) -> bool:
        """Forgets the device's keys and enrollment code: its proofs and tokens stop counting."""
        ...

    async def device_keys(self, site: str, device: str) -> list[DeviceKey]:
        """The device's key history, oldest first."""
        ...

    async def device_key_at(self, site: str, device: str, seq: int) -> DeviceKey | None:
        """The key epoch that covers `seq` (the latest one starting at or below it)."""
        ...

    async def change_device_keys(
        self,
        key: DeviceKey,
        previous: bytes,
        code: str | None,
    ) -> None:
        """Makes `key` (id ignored) the device's current key and room and appends it to the
        history, in one transaction, only while the current key is still `previous`, the
        device's head is below `key.from_seq` and (when `code` is given) the enrollment code
        is still `code` (which is burnt); otherwise store.Conflict."""
        ...

    async def arm_reenroll(
        self, site: str, device: str, code: str, expires_ms: int, room: str
    ) -> bool:
        """Gives an enrolled device a one-time re-enrollment code (and target room); False
        when the device does not exist or has no keys."""
        ...

    async def reenroll_room(self, site: str, device: str) -> str | None: ...

    async def store_proof(
        self,
        row: ProofRow,
        slot_s: int,
        otp_step_s: int,
        clock_offset_ms: int,
        otp_digest: str = "sha1",
    ) -> None: ...
    async def proof_hash(self, site: str, device: str, seq: int) -> str | None: ...
    async def get_proof(self, site: str, device: str, seq: int) -> ProofRow | None: ...
    async def proof_for_slot(self, site: str, device: str, slot: int) -> ProofRow | None: ...

    async def add_chain_event(
        self, site: str, device: str, kind: str, first: int, last: int, detail: str, now_ms: int
    ) -> ChainEvent: ...
    async def settle_gaps(self, site: str, device: str, now_ms: int) -> int: ...
    async def list_chain_events(
        self, site: str | None, device: str | None, limit: int, after_id: int
    ) -> list[ChainEvent]: ...
    async def list_proofs(
        self, site: str | None, device: str, limit: int, before_seq: int | None = None
    ) -> list[ProofRow]: ...

    async def get_profile(self, site: str, room: str) -> environment.Profile | None: ...
    async def save_profile(self, profile: environment.Profile, now_ms: int) -> None: ...
    async def list_rooms(self, site: str | None) -> list[Room]: ...

    async def raise_alert(
        self, site: str, device: str, kind: str, reason: str, now_ms: int
    ) -> Alert | None: ...
    async def clear_alerts(self, site: str, device: str, kind: str, now_ms: int) -> list[Alert]: ...
    async def list_alerts(
        self, site: str | None, open_only: bool, limit: int, after_id: int, kind: str | None = None
    ) -> list[Alert]: ...
    async def silent_devices(self, now_ms: int, grace_ms: int) -> list[Device]: ...
    async def clear_alert(self, alert_id: int, now_ms: int) -> Alert | None: ...

    async def count_rejection(self, reason: str, topic: str, size: int, now_ms: int) -> None: ...
    async def rejections(self) -> tuple[dict[str, int], list[dict[str, typing.Any]]]: ...

    async def add_student(self, site: str, student_id: str, pin_hash: str) -> None: ...
    async def get_student(self, site: str, student_id: str) -> Student | None: ...
    async def purge_before(self, before_ms: int) -> dict[str, int]:
        """Retention: check-ins older than `before_ms` lose their client network and browser
        evidence (status, flags and verdicts stay); proofs older than that lose their JWS
        (the room's raw environment) unless a check-in's evidence needs it (seq, hash, slot
        and verdict stay). Returns how many rows were purged of each kind."""
        ...

    async def erase_student(self, site: str, student_id: str) -> dict[str, int]:
        """Deletes the student and everything about them (check-ins and their verification
        links, overrides, enrolments, credentials) in one transaction; rows deleted per table."""
        ...

    async def add_credential(
        self, credential_id: str, site: str, student_id: str, now_ms: int, expires_ms: int
    ) -> None: ...
    async def credential_active(self, credential_id: str, now_ms: int) -> bool: ...
    async def revoke_credential(self, credential_id: str) -> None: ...

    async def add_admin_token(
        self,
        token_hash: str,
        role: str,
        name: str,
        now_ms: int,
        courses: tuple[tuple[str, str], ...] = (),
        site: str | None = None,
    ) -> None: ...
    async def token_courses(self, token_hash: str) -> frozenset[tuple[str, str]]:
        """The (site, course) pairs a teacher token is limited to."""
        ...

    async def admin_role(self, token_hash: str) -> str | None: ...
    async def admin_grant(self, token_hash: str) -> TokenGrant | None:
        """The token's role and site; None for an unknown or revoked token."""
        ...

    async def list_admin_tokens(self, site: str | None = None) -> list[AdminToken]:
        """Every token, or (with `site`) only that site's."""
        ...

    async def set_token_site(self, token_id: str, role: str, site: str | None) -> bool:
        """Gives the token (by id) a role and site (`central token migrate`); False when
        there is no such token."""
        ...

    async def audit(
        self,
        actor: str,
        action: str,
        target: str,
        detail: str,
        now_ms: int,
        site: str | None = None,
    ) -> None: ...
    async def list_audit(
        self, limit: int, after_id: int, site: str | None = None
    ) -> list[AuditEntry]:
        """Every entry, or (with `site`) only that site's."""
        ...

    async def revoke_admin_token(self, token_id: str, site: str | None = None) -> bool:
        """Deletes the token whose id (the first 12 hex digits of its hash) is given; with
        `site`, only a token of that site."""
        ...

    async def add_checkin(self, new: NewCheckin) -> Checkin: ...
    async def record_checkin(self, context: CheckinContext, decide: DecideCheckin) -> Checkin:
        """In one transaction: the credential is still active (else CredentialInactive), the
        other students this browser checked in are counted (`browser_students`), `decide`
        turns that count into the row, and the row is inserted (Conflict on a duplicate).
        Atomic, so two students on one phone at the same instant cannot both count zero."""
        ...

    async def get_checkin(self, checkin_id: int) -> Checkin | None: ...
    async def list_checkins(
        self,
        site: str | None,
        room: str | None,
        since_ms: int | None,
        limit: int,
        after_id: int = 0,
        student_id: str | None = None,
        courses: frozenset[tuple[str, str]] | None = None,
    ) -> list[Checkin]:
        """Oldest first after `after_id`; with `courses` ((site, course) pairs, e.g. a teacher's)
        only check-ins attributed to a session of one of them, filtered before `limit` so that
        pages stay full."""
        ...

    async def occurrence_checkins(self, session_id: int, session_date: str) -> list[Checkin]: ...
    async def browser_students(
        self,
        browser: str,
        student_id: str,
        session_id: int | None,
        session_date: str | None,
        room: str,
        since_ms: int,
    ) -> int: ...
    async def set_checkout(self, checkin_id: int, now_ms: int) -> bool: ...
    async def set_record_jws(self, checkin_id: int, record_jws: str) -> str:
        """Keeps the first signature and returns the stored one; NotFound for an unknown id."""
        ...

    async def add_course(self, course: Course) -> None: ...
    async def site_exists(self, site: str) -> bool: ...
    async def set_student_pin(self, site: str, student_id: str, pin_hash: str) -> bool:
        """Replaces a student's PIN hash and, in the same transaction, revokes every
        remembered-browser credential of the student; False when the student does not exist."""
        ...

    async def update_course(self, course: Course) -> bool:
        """Sets an existing course's name and timezone; False when it does not exist."""
        ...

    async def update_session(self, session: timetable.Session) -> bool:
        """Rewrites session `session.id` (room, times, recurrence, grace, check-out,
        timezone); False when it does not exist."""
        ...

    async def get_course(self, site: str, course: str) -> Course | None: ...
    async def list_courses(self, site: str | None) -> list[Course]: ...
    async def set_roster(self, site: str, course: str, students: list[str]) -> None: ...
    async def roster(self, site: str, course: str) -> list[str]: ...
    async def courses_of(self, site: str, student_id: str) -> list[str]: ...
    async def add_session(self, session: timetable.Session) -> timetable.Session: ...
    async def get_session(self, session_id: int) -> timetable.Session | None: ...
    async def list_sessions(
        self,
        site: str | None,
        course: str | None,
        room: str | None,
        limit: int,
        after_id: int,
    ) -> list[timetable.Session]: ...
    async def set_override(self, override: Override) -> None: ...
    async def overrides(self, session_id: int, session_date: str) -> list[Override]: ...

    async def add_link(
        self, token_hash: str, checkin_id: int, now_ms: int, expires_ms: int
    ) -> VerifyLink:
        """NotFound for an unknown check-in, Conflict for a token hash already stored."""
        ...

    async def find_link(self, token_hash: str) -> VerifyLink | None: ...
    async def get_link(self, link_id: int) -> VerifyLink | None: ...
    async def revoke_link(self, link_id: int, now_ms: int) -> bool: ...

    async def add_webhook(
        self,
        url: str,
        events: tuple[str, ...],
        description: str,
        secret: str,
        now_ms: int,
        site: str | None = None,
    ) -> Webhook: ...
    async def list_webhooks(self, site: str | None = None) -> list[Webhook]:
        """Every webhook, or (with `site`) only that site's."""
        ...

    async def delete_webhook(self, webhook_id: int) -> bool:
        """Removes the webhook and its delivery log; False when there is no such webhook."""
        ...

    async def enqueue_webhook_event(
        self, event_id: str, event_type: str, body: str, now_ms: int, site: str | None = None
    ) -> int:
        """A pending delivery for each webhook subscribed to event_type of the event's site
        (or of every site), due now; an event id a webhook already has is skipped (so
        enqueueing twice is harmless). Returns how many."""
        ...

    async def webhooks_due(self, now_ms: int) -> list[int]:
        """The ids of webhooks with a delivery due by now_ms."""
        ...

    async def due_webhook_deliveries(
        self, webhook_id: int, now_ms: int, limit: int
    ) -> list[WebhookDelivery]: ...
    async def claim_webhook_delivery(self, delivery_id: int, due_ms: int, until_ms: int) -> bool:
        """Moves next_attempt_at from due_ms to until_ms; False when another process (or task)
        claimed it first."""
        ...

    async def record_webhook_attempt(
        self,
        delivery_id: int,
        status: int | None,
        error: str | None,
        next_attempt_ms: int | None,
        delivered_ms: int | None,
    ) -> None:
        """Counts one attempt and its outcome."""
        ...

    async def list_webhook_deliveries(
        self, webhook_id: int, limit: int, after_id: int
    ) -> list[WebhookDelivery]: ...
    async def purge_webhook_deliveries(self, before_ms: int) -> int:
        """Deletes delivered and failed deliveries created before before_ms; returns how many."""
        ...

    async def webhook_cursor(self, name: str) -> int | None: ...
    async def set_webhook_cursor(self, name: str, value: int) -> None: ...
