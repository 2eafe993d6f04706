"""What the API answers, one model per response, built from the store's dataclasses. Times
are unix ms inside and RFC 3339 on the wire (`fields.Time`); a field with a default is an
optional part of the answer, left out while unset (see `parse.respond`)."""

from __future__ import annotations

import datetime
import typing

import pydantic

from central.checkin import attendance
from central.domain import environment
from central.domain import timetable
from central.http.apimodels import fields
from central.storage import store
from edge_agent.protocol import b64

Time = fields.Time
Anything = dict[str, typing.Any]
NextAfter = typing.Annotated[
    int | None, pydantic.Field(description="the last id of a full page: ask again after it")
]


class Answer(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)

    @classmethod
    def from_record(cls, record: object) -> typing.Self:
        """From a store dataclass whose attributes carry the answer's names (others are
        ignored: a webhook's secret never reaches an answer)."""
        return cls.model_validate(record, from_attributes=True)


class ErrorBody(Answer):
    code: str
    message: str
    details: Anything
    request_id: str


class Error(Answer):
    error: ErrorBody


class Keys(Answer):
    ed25519: str
    x25519: str


class Checkin(Answer):
    id: int
    site: str
    room: str
    device: str
    student_id: str
    slot: int
    method: typing.Literal["qr", "otp"]
    created_at: Time
    token_age_ms: int
    status: str
    flags: list[str]
    session_id: int | None
    session_date: str | None
    checked_out_at: Time | None
    duration_s: int | None
    evidence: Anything

    @classmethod
    def of(cls, c: store.Checkin) -> Checkin:
        return cls(
            id=c.id,
            site=c.site,
            room=c.room,
            device=c.device,
            student_id=c.student_id,
            slot=c.slot,
            method=typing.cast(typing.Literal["qr", "otp"], c.method),
            created_at=c.created_at,
            token_age_ms=c.token_age_ms,
            status=c.status,
            flags=list(c.flags),
            session_id=c.session_id,
            session_date=c.session_date,
            checked_out_at=c.checked_out_at,
            duration_s=(
                (c.checked_out_at - c.created_at) // 1000 if c.checked_out_at is not None else None
            ),
            evidence=c.evidence,
        )


class CheckinSession(Answer):
    id: int
    course: str
    date: str
    starts_at: Time
    ends_at: Time


class CheckinResult(Answer):
    checkin: Checkin
    session: CheckinSession | None = None
    credential: str | None = None


class Checkout(Answer):
    checkin_id: int
    student_id: str
    session_id: int | None
    session_date: str | None
    checked_in_at: Time
    checked_out_at: Time | None
    duration_s: int


class CheckoutResult(Answer):
    checkout: Checkout


class Checkins(Answer):
    checkins: list[Checkin]
    next_after: NextAfter


class Device(Answer):
    site: str
    room: str
    device: str
    online: bool
    enrolled: bool
    last_seq: int
    last_proof_at: Time | None
    public_key: str | None
    x25519_public_key: str | None
    clock_offset_ms: int | None
    slot_s: int | None
    otp_step_s: int | None
    otp_digest: typing.Literal["sha1", "sha256"] | None  # of its last proof; None before one
    verdict: str | None
    telemetry: Anything | None

    @classmethod
    def of(cls, d: store.Device, telemetry: Anything | None) -> Device:
        return cls(
            site=d.site,
            room=d.room,
            device=d.device,
            online=d.online,
            enrolled=d.ed25519 is not None,
            last_seq=d.last_seq,
            last_proof_at=d.last_proof_at,
            public_key=b64.encode(d.ed25519) if d.ed25519 else None,
            x25519_public_key=b64.encode(d.x25519) if d.x25519 else None,
            clock_offset_ms=d.clock_offset_ms,
            slot_s=d.slot_s,
            otp_step_s=d.otp_step_s,
            otp_digest=_otp_digest(d),
            verdict=d.last_verdict,
            telemetry=telemetry,
        )


def _otp_digest(d: store.Device) -> typing.Literal["sha1", "sha256"] | None:
    """The TOTP digest the device's last proof announced (absent there: sha1)."""
    if d.slot_s is None:
        return None
    return "sha256" if d.otp_digest == "sha256" else "sha1"


class Devices(Answer):
    devices: list[Device]


class Proof(Answer):
    site: str
    device: str
    seq: int
    slot: int
    iat: int
    received_at: Time
    hash: str
    gap_before: bool
    verdict: str | None
    reasons: list[str]
    jws: str


class Proofs(Answer):
    proofs: list[Proof]


class Rejection(Answer):
    at: Time
    topic: str
    reason: str
    size: int


class Rejections(Answer):
    counts: dict[str, int]
    recent: list[Rejection]


class Profile(Answer):
    state: str
    wifi: list[str]
    ble: list[str]
    learned: int
    learn_proofs: int

    @classmethod
    def of(cls, p: environment.Profile) -> Profile:
        return cls(
            state=p.state,
            wifi=sorted(p.wifi),
            ble=sorted(p.ble),
            learned=p.learned,
            learn_proofs=p.learn_target,
        )


class Room(Answer):
    site: str
    room: str
    name: str
    lat: float | None
    lon: float | None
    radius_m: float
    profile: Profile | None = None


class Rooms(Answer):
    rooms: list[Room]


class RoomResult(Answer):
    room: Room


class ProfileResult(Answer):
    profile: Profile


class Alert(Answer):
    """Alert times are unix ms (as on the event stream)."""

    id: int
    site: str
    device: str
    kind: str
    reason: str
    raised_at: int
    cleared_at: int | None
    open: bool
    change: str | None = None

    @classmethod
    def of(cls, a: store.Alert, change: str | None = None) -> Alert:
        found = cls(
            id=a.id,
            site=a.site,
            device=a.device,
            kind=a.kind,
            reason=a.reason,
            raised_at=a.raised_at,
            cleared_at=a.cleared_at,
            open=a.cleared_at is None,
        )
        return found if change is None else found.model_copy(update={"change": change})


class Alerts(Answer):
    alerts: list[Alert]
    next_after: NextAfter


class AlertResult(Answer):
    alert: Alert


class ChainEvent(Answer):
    id: int
    site: str
    device: str
    kind: str
    first: int
    last: int
    detail: str
    detected_at: Time
    resolved_at: Time | None


class ChainEvents(Answer):
    events: list[ChainEvent]
    next_after: NextAfter


class Token(Answer):
    id: str
    role: typing.Literal["admin", "teacher", "auditor", "operator"]
    site: str | None
    name: str
    created_at: Time
    courses: list[str] = pydantic.Field(description='"site/course" a teacher token is limited to')


class Tokens(Answer):
    tokens: list[Token]


class TokenRevoked(Answer):
    revoked: str


class Command(Answer):
    kind: str
    nonce: str
    args: Anything
    sent_at: Time
    expires_at: Time
    outcome: str
    reason: str

    @classmethod
    def of(cls, sent: Anything) -> Command:
        return cls.model_validate(sent)


class CommandResult(Answer):
    command: Command


class Commands(Answer):
    commands: list[Command]


class DeviceKey(Answer):
    kind: str
    room: str
    from_seq: int
    public_key: str
    x25519_public_key: str
    added_at: Time
    current: bool
    evidence: str
    note: str  # why the evidence is weaker than a message the key signed, or ""

    @classmethod
    def of(cls, k: store.DeviceKey, current: bytes | None) -> DeviceKey:
        return cls(
            kind=k.kind,
            room=k.room,
            from_seq=k.from_seq,
            public_key=b64.encode(k.ed25519),
            x25519_public_key=b64.encode(k.x25519),
            added_at=k.added_at,
            current=k.ed25519 == current,
            evidence=k.evidence,
            note=k.note,
        )


class DeviceKeys(Answer):
    keys: list[DeviceKey]


class AuditEntry(Answer):
    id: int
    at: Time
    actor: str
    action: str
    target: str
    detail: str
    site: str | None


class Audit(Answer):
    audit: list[AuditEntry]
    next_after: NextAfter


class Course(Answer):
    site: str
    course: str
    name: str
    timezone: str


class CourseResult(Answer):
    course: Course


class Courses(Answer):
    courses: list[Course]


class Roster(Answer):
    course: str
    students: list[str]


DateText = typing.Annotated[
    datetime.date, pydantic.PlainSerializer(datetime.date.isoformat, return_type=str)
]


class Session(Answer):
    id: int
    site: str
    course: str
    room: str
    timezone: str
    first_date: DateText
    start: str
    end: str
    weekly: bool
    until: DateText | None
    grace_min: int
    checkout: bool

    @classmethod
    def of(cls, s: timetable.Session) -> Session:
        return cls(
            id=s.id,
            site=s.site,
            course=s.course,
            room=s.room,
            timezone=s.timezone,
            first_date=s.first_date,
            start=s.start.isoformat("minutes"),
            end=s.end.isoformat("minutes"),
            weekly=s.weekly,
            until=s.until,
            grace_min=s.grace_min,
            checkout=s.checkout,
        )


class SessionResult(Answer):
    session: Session


class Sessions(Answer):
    sessions: list[Session]
    next_after: NextAfter


class OccurrenceFields(Answer):
    session_id: int
    course: str
    room: str
    date: typing.Annotated[str, pydantic.WithJsonSchema(fields.DATE_SCHEMA)]
    timezone: str
    starts_at: Time
    late_after: Time
    ends_at: Time


class Occurrence(OccurrenceFields):
    @classmethod
    def of(cls, o: timetable.Occurrence) -> Occurrence:
        return cls(
            session_id=o.session.id,
            course=o.session.course,
            room=o.session.room,
            date=o.key,
            timezone=o.session.timezone,
            starts_at=o.start_ms,
            late_after=o.late_after_ms,
            ends_at=o.end_ms,
        )


class Occurrences(Answer):
    occurrences: list[Occurrence]


class Override(Answer):
    status: str
    note: str
    set_by: str
    set_at: Time


class AttendanceFields(Answer):
    student_id: str
    status: typing.Literal["present", "late", "flagged", "excused", "absent", "pending"]
    on_roster: bool
    checkin_id: int | None
    checked_in_at: Time | None
    checked_out_at: Time | None
    duration_s: int | None
    flags: list[str]
    checkin_status: str | None
    override: Override | None


class AttendanceRow(AttendanceFields):
    @classmethod
    def of(cls, row: attendance.Row) -> AttendanceRow:
        c, o = row.checkin, row.override
        return cls(
            student_id=row.student_id,
            status=typing.cast(typing.Any, row.status),
            on_roster=row.on_roster,
            checkin_id=c.id if c else None,
            checked_in_at=c.created_at if c else None,
            checked_out_at=c.checked_out_at if c else None,
            duration_s=(
                (c.checked_out_at - c.created_at) // 1000
                if c is not None and c.checked_out_at is not None
                else None
            ),
            flags=list(c.flags) if c else [],
            checkin_status=c.status if c else None,
            override=(
                Override(status=o.status, note=o.note, set_by=o.set_by, set_at=o.set_at)
                if o
                else None
            ),
        )


Summary = dict[str, int]


class AttendanceView(Answer):
    occurrence: Occurrence
    ended: bool
    summary: Summary
    attendance: list[AttendanceRow]


class AttendanceResult(Answer):
    attendance: AttendanceRow


class StudentOccurrence(OccurrenceFields, AttendanceFields):
    """One occurrence of a student's courses with the student's status in it."""


class StudentAttendance(Answer):
    student_id: str
    summary: Summary
    attendance: list[StudentOccurrence]
    next_offset: int | None


class StudentExport(Answer):
    """Everything stored about the student (the privacy export's document)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="allow")
    site: str
    student_id: str
    checkins: list[Anything]


class Erased(Answer):
    erased: str
    deleted: dict[str, int]


class Link(Answer):
    id: int
    checkin_id: int
    url: str
    expires_at: Time


class LinkResult(Answer):
    link: Link


class LinkRevoked(Answer):
    revoked: int


class HistoryRow(Answer):
    session_id: int
    room: str
    date: typing.Annotated[str, pydantic.WithJsonSchema(fields.DATE_SCHEMA)]
    starts_at: Time
    ended: bool
    summary: Summary
    rate: float | None
    late: int


class CourseHistory(Answer):
    site: str
    course: str
    occurrences: list[HistoryRow]


class RowError(Answer):
    row: int
    field: str | None
    message: str


class ImportResult(Answer):
    kind: str
    dry_run: bool
    applied: bool
    rows: int
    created: int
    updated: int
    unchanged: int
    pin_will_be_set: int
    pins: int
    errors: list[RowError]


class Webhook(Answer):
    id: int
    site: str | None
    url: typing.Annotated[str, pydantic.WithJsonSchema({"type": "string", "format": "uri"})]
    events: list[typing.Literal["checkin", "session_closed"]]
    description: str
    created_at: Time


class WebhookCreated(Answer):
    webhook: Webhook
    secret: str


class Webhooks(Answer):
    webhooks: list[Webhook]


class Deleted(Answer):
    deleted: int


class Delivery(Answer):
    id: int
    event_id: str
    event_type: str
    state: typing.Literal["pending", "delivered", "failed"]
    created_at: Time
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: Time | None
    delivered_at: Time | None

    @classmethod
    def of(cls, d: store.WebhookDelivery) -> Delivery:
        if d.delivered_at is not None:
            state: typing.Literal["pending", "delivered", "failed"] = "delivered"
        elif d.next_attempt_at is not None:
            state = "pending"
        else:
            state = "failed"
        return cls(
            id=d.id,
            event_id=d.event_id,
            event_type=d.event_type,
            state=state,
            created_at=d.created_at,
            attempts=d.attempts,
            last_status=d.last_status,
            last_error=d.last_error,
            next_attempt_at=d.next_attempt_at,
            delivered_at=d.delivered_at,
        )


class Deliveries(Answer):
    deliveries: list[Delivery]
    next_after: NextAfter
