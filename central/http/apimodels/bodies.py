"""Request bodies of the API, one model each: strict JSON types (no "1" for 1, no true for 1),
no unknown fields, the same rules the CSV import applies to its rows."""

from __future__ import annotations

import datetime
import typing

import pydantic

from central.checkin import checkins
from central.core import errors
from central.domain import policy
from central.domain import timetable
from central.http import webhooks
from central.http.apimodels import fields
from central.http.apimodels import parse
from central.storage import store
from edge_agent.protocol import command

MAX_ROSTER = 5000
MAX_TEXT = 2048  # a check-in's strings
TEACHER_STATUSES = ("present", "late", "excused", "absent")


class Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        extra="forbid", strict=True, frozen=True, allow_inf_nan=False
    )
    MESSAGES: typing.ClassVar[dict[str, str]] = {}  # a field's refusal in the API's words


def _no_default(schema: dict[str, typing.Any]) -> None:
    """A field whose absence means "unchanged", not a value to document as the default."""
    schema.pop("default", None)


CheckinText = typing.Annotated[str, pydantic.StringConstraints(max_length=MAX_TEXT)]


class Geo(Body):
    """The phone's location, taken only with the student's explicit consent."""

    lat: float = pydantic.Field(ge=-90, le=90)
    lon: float = pydantic.Field(ge=-180, le=180)
    accuracy_m: float = pydantic.Field(ge=0, le=100_000)
    consent: typing.Literal[True]


class Checkin(Body):
    """A check-in or check-out: the QR `token`, or `site` + `room` + `otp`; then
    `student_id` + `pin`, or the remembered `credential` (also read from its cookie)."""

    token: CheckinText | None = None
    site: CheckinText | None = None
    room: CheckinText | None = None
    otp: CheckinText | None = None
    student_id: CheckinText | None = None
    pin: CheckinText | None = None
    credential: CheckinText | None = None
    geo: Geo | None = None
    MESSAGES: typing.ClassVar[dict[str, str]] = {
        key: f"{key} must be a string"
        for key in ("token", "site", "room", "otp", "student_id", "pin", "credential")
    }

    def request(self, cookie: str | None, browser_cookie: str | None = None) -> checkins.Request:
        """The check-in service's request: this body with what the cookies add (the
        remembered credential when the body has none, the browser's id when well formed)."""
        geo = policy.Geo(self.geo.lat, self.geo.lon, self.geo.accuracy_m) if self.geo else None
        browser = (
            browser_cookie
            if browser_cookie and checkins.BROWSER_ID.fullmatch(browser_cookie)
            else None
        )
        request = checkins.Request(
            token=self.token,
            site=self.site,
            room=self.room,
            otp=self.otp,
            student_id=self.student_id,
            pin=self.pin,
            credential=self.credential if self.credential is not None else cookie or None,
            geo=geo,
            browser=browser,
        )
        if request.token is None and not (request.site and request.room and request.otp):
            raise errors.ApiError(
                400, "invalid_request", "send token, or site + room + otp", {"field": "token"}
            )
        if request.credential is None and not (request.student_id and request.pin):
            raise errors.ApiError(
                400,
                "invalid_request",
                "send student_id and pin, or a credential",
                {"field": "student_id"},
            )
        return request


class RoomPatch(Body):
    """A room's geofence: lat and lon together (or both null), and its radius."""

    lat: float | None = pydantic.Field(None, ge=-90, le=90)
    lon: float | None = pydantic.Field(None, ge=-180, le=180)
    radius_m: float = pydantic.Field(
        0.0,  # never used: an absent radius keeps the room's (`model_fields_set`)
        gt=0,
        le=100_000,
        description="absent: the room's radius stays",
        json_schema_extra=_no_default,
    )
    MESSAGES: typing.ClassVar[dict[str, str]] = {
        "lat": "lat and lon: both numbers in range, or both null",
        "lon": "lat and lon: both numbers in range, or both null",
        "radius_m": "radius_m must be 0..100000",
    }

    @pydantic.model_validator(mode="after")
    def both_or_neither(self) -> RoomPatch:
        if {"lat", "lon"} & self.model_fields_set and (self.lat is None) != (self.lon is None):
            raise fields.message("lat and lon: both numbers in range, or both null")
        return self


class ProfileAction(Body):
    action: typing.Annotated[
        str, fields.Choice(("confirm", "relearn"), "action must be confirm or relearn")
    ]
    learn_proofs: int = pydantic.Field(10, ge=1, le=10_000)
    wifi: list[str] | None = None
    ble: list[str] | None = None
    MESSAGES: typing.ClassVar[dict[str, str]] = {
        "learn_proofs": "learn_proofs must be 1..10000",
        "wifi": "wifi is a list, with confirm",
        "ble": "ble is a list, with confirm",
    }

    @pydantic.model_validator(mode="after")
    def lists_with_confirm(self) -> ProfileAction:
        for key in ("wifi", "ble"):
            if getattr(self, key) is not None and self.action != "confirm":
                raise fields.message(f"{key} is a list, with confirm", field=key)
        return self


class Command(Body):
    """`{"kind": "show_message", "args": {"text", "seconds"}, "ttl_s": 300}` or
    `{"kind": "status_report"}`."""

    kind: typing.Annotated[
        str, pydantic.WithJsonSchema({"type": "string", "enum": sorted(command.KINDS)})
    ]
    args: dict[str, typing.Any] | None = None
    ttl_s: int = pydantic.Field(300, ge=1, le=86400)
    MESSAGES: typing.ClassVar[dict[str, str]] = {"ttl_s": "ttl_s: 1..86400"}


def _timezone(raw: object) -> str:
    try:
        timetable.zone(typing.cast(str, raw))
    except timetable.TimetableError as exc:
        raise fields.message(str(exc)) from exc
    return typing.cast(str, raw)


Timezone = typing.Annotated[str, fields.Text(64), pydantic.AfterValidator(_timezone)]


class Course(Body):
    site: fields.Name
    course: fields.Name
    name: typing.Annotated[str, fields.Text(200)] = ""
    timezone: Timezone = "UTC"


class Roster(Body):
    """The whole roster; ids that break the name rule are listed back (`details.students`)."""

    students: list[typing.Annotated[str, pydantic.WithJsonSchema(fields.NAME_SCHEMA)]] = (
        pydantic.Field(max_length=MAX_ROSTER)
    )
    MESSAGES: typing.ClassVar[dict[str, str]] = {
        "students": f"students must be a list of up to {MAX_ROSTER} ids"
    }


class Session(Body):
    """A timetable session: one date, or weekly until a date; times are local to the
    session's time zone (its course's by default)."""

    site: fields.Name
    course: fields.Name
    room: fields.Name
    first_date: typing.Annotated[datetime.date, fields.BodyDate("first_date")]
    start: typing.Annotated[datetime.time, fields.BodyTime("start")]
    end: typing.Annotated[datetime.time, fields.BodyTime("end")]
    weekly: bool = False
    until: typing.Annotated[datetime.date, fields.BodyDate("until")] | None = None
    grace_min: int = pydantic.Field(5, ge=0, le=240)
    checkout: bool = False
    timezone: typing.Annotated[str, fields.Text(64)] | None = None
    MESSAGES: typing.ClassVar[dict[str, str]] = {
        "weekly": "weekly must be true or false",
        "checkout": "checkout must be true or false",
        "grace_min": "grace_min must be an integer 0..240",
    }


class Status(Body):
    status: typing.Annotated[
        str, fields.Choice(TEACHER_STATUSES, f"status must be one of {sorted(TEACHER_STATUSES)}")
    ]
    note: typing.Annotated[str, fields.Text(500)] = ""


class Link(Body):
    ttl_days: float | None = pydantic.Field(None, gt=0, le=3650)
    MESSAGES: typing.ClassVar[dict[str, str]] = {"ttl_days": "ttl_days must be 0..3650"}


EventType = typing.Literal["checkin", "session_closed"]
assert typing.get_args(EventType) == webhooks.EVENT_TYPES
EVENTS_TEXT = f"events must be a non-empty list of distinct {list(webhooks.EVENT_TYPES)}"


def _url(raw: object) -> str:
    try:
        return webhooks.check_url(raw)
    except webhooks.InvalidUrl as exc:
        raise fields.message(str(exc)) from exc


def _distinct(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise fields.message(EVENTS_TEXT)
    return value


class Webhook(Body):
    """A receiver: an https URL (checked again, with its addresses, by the handler), the
    events it wants, a description; an operator may name the `site` it belongs to."""

    url: typing.Annotated[
        str,
        pydantic.BeforeValidator(_url),
        pydantic.WithJsonSchema({"type": "string", "format": "uri", "maxLength": 2000}),
    ]
    events: typing.Annotated[
        list[EventType],
        pydantic.Field(min_length=1, json_schema_extra={"uniqueItems": True}),
        pydantic.AfterValidator(_distinct),
    ]
    description: typing.Annotated[str, fields.Text(200, allow="\t")] = ""
    site: typing.Annotated[str, fields.NameRule(sentence="site must be a name")] | None = None
    MESSAGES: typing.ClassVar[dict[str, str]] = {"events": EVENTS_TEXT}


def course_of(body: Course) -> store.Course:
    return store.Course(body.site, body.course, body.name, body.timezone)


def course_from_body(body: dict[str, typing.Any]) -> store.Course:
    """A course by the API's rules, for the CSV import (a row as a dict)."""
    return course_of(parse.validate(Course, body))


def session_of(body: Session, course: store.Course, room: str) -> timetable.Session:
    """The session once its course and room exist, checked by the timetable's rules."""
    session = timetable.Session(
        id=0,
        site=course.site,
        course=course.course,
        room=room,
        timezone=body.timezone if body.timezone is not None else course.timezone,
        first_date=body.first_date,
        start=body.start,
        end=body.end,
        weekly=body.weekly,
        until=body.until,
        grace_min=body.grace_min,
        checkout=body.checkout,
    )
    try:
        timetable.validate(session)
    except timetable.TimetableError as exc:
        raise errors.ApiError(400, "invalid_request", str(exc), {"field": exc.field}) from exc
    return session


def session_from_body(
    body: dict[str, typing.Any], course: store.Course, room: str
) -> timetable.Session:
    """A session by the API's rules, for the CSV import (a row as a dict)."""
    return session_of(parse.validate(Session, body), course, room)
