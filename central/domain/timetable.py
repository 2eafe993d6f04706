"""Timetable sessions and their occurrences, in the session's own timezone.

A session is a course meeting in a room: a first date, a local start and end time, and an
optional weekly recurrence until a last date. Occurrences are computed, not stored: a local
09:00 stays 09:00 across a DST change, which is what a timetable means.
"""

from __future__ import annotations

import dataclasses
import datetime
import zoneinfo

MAX_OCCURRENCES = 1000


class TimetableError(ValueError):
    """A session definition that cannot work; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class Session:
    id: int
    site: str
    course: str
    room: str
    timezone: str
    first_date: datetime.date
    start: datetime.time
    end: datetime.time
    weekly: bool
    until: datetime.date | None
    grace_min: int
    checkout: bool  # venues: students also check out, and the duration is kept


@dataclasses.dataclass(frozen=True)
class Occurrence:
    session: Session
    date: datetime.date
    start_ms: int
    end_ms: int

    @property
    def key(self) -> str:
        return self.date.isoformat()

    @property
    def late_after_ms(self) -> int:
        return self.start_ms + self.session.grace_min * 60_000


def zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise TimetableError("timezone", f"unknown timezone {name!r}") from exc


def parse_date(field: str, text: object) -> datetime.date:
    if not isinstance(text, str):
        raise TimetableError(field, f"{field} must be a date YYYY-MM-DD")
    try:
        return datetime.date.fromisoformat(text)
    except ValueError as exc:
        raise TimetableError(field, f"{field} must be a date YYYY-MM-DD") from exc


def parse_time(field: str, text: object) -> datetime.time:
    if not isinstance(text, str) or len(text) != 5:
        raise TimetableError(field, f"{field} must be a local time HH:MM")
    try:
        return datetime.time.fromisoformat(text)
    except ValueError as exc:
        raise TimetableError(field, f"{field} must be a local time HH:MM") from exc


def validate(session: Session) -> None:
    zone(session.timezone)
    if session.end <= session.start:
        raise TimetableError("end", "a session ends after it starts, on the same day")
    if session.until is not None and session.until < session.first_date:
        raise TimetableError("until", "until is before the first date")
    if session.until is not None and not session.weekly:
        raise TimetableError("until", "until needs weekly recurrence")
    if not 0 <= session.grace_min <= 240:
        raise TimetableError("grace_min", "grace_min must be 0..240")


def _epoch_ms(date: datetime.date, at: datetime.time, tz: zoneinfo.ZoneInfo) -> int:
    return int(datetime.datetime.combine(date, at, tzinfo=tz).timestamp() * 1000)


def meets_on(session: Session, date: datetime.date) -> bool:
    if date < session.first_date:
        return False
    if not session.weekly:
        return date == session.first_date
    if session.until is not None and date > session.until:
        return False
    return (date - session.first_date).days % 7 == 0


def occurrence(session: Session, date: datetime.date) -> Occurrence | None:
    if not meets_on(session, date):
        return None
    tz = zone(session.timezone)
    return Occurrence(
        session, date, _epoch_ms(date, session.start, tz), _epoch_ms(date, session.end, tz)
    )


def local_date(session: Session, at_ms: int) -> datetime.date:
    return datetime.datetime.fromtimestamp(at_ms / 1000, zone(session.timezone)).date()


def _meeting_on_or_before(session: Session, date: datetime.date) -> datetime.date | None:
    if date < session.first_date:
        return None
    if not session.weekly:
        return session.first_date
    if session.until is not None:
        date = min(date, session.until)
    return date - datetime.timedelta(days=(date - session.first_date).days % 7)


def _meeting_after(session: Session, date: datetime.date) -> datetime.date | None:
    if date < session.first_date:
        return session.first_date
    if not session.weekly:
        return None
    found = date + datetime.timedelta(days=7 - (date - session.first_date).days % 7)
    return found if session.until is None or found <= session.until else None


def default_date(session: Session, at_ms: int) -> datetime.date:
    """The meeting a viewer most likely means at `at_ms`: today's in the session's own time
    zone, else the latest past one, else the first. A browser's own date is not it: an
    evening class seen from a time zone ahead is already on the next day there."""
    today = local_date(session, at_ms)
    return _meeting_on_or_before(session, today) or session.first_date


def nearest_dates(session: Session, date: datetime.date, each_side: int = 2) -> list[datetime.date]:
    """Up to `each_side` meeting dates before `date` and as many from it on, in order: what a
    client that asked for a day the session does not meet on can offer instead."""
    before: list[datetime.date] = []
    found = _meeting_on_or_before(session, date - datetime.timedelta(days=1))
    while found is not None and len(before) < each_side:
        before.insert(0, found)
        found = _meeting_on_or_before(session, found - datetime.timedelta(days=1))
    after: list[datetime.date] = []
    found = date if meets_on(session, date) else _meeting_after(session, date)
    while found is not None and len(after) < each_side:
        after.append(found)
        found = _meeting_after(session, found)
    return before + after


def not_meeting(session: Session, date: datetime.date) -> tuple[str, dict[str, object]]:
    """The message and error details for a date the session does not meet on."""
    return (
        f"session {session.id} does not meet on {date} (dates are in {session.timezone})",
        {
            "field": "date",
            "timezone": session.timezone,
            "meets_on": [day.isoformat() for day in nearest_dates(session, date)],
        },
    )


def running(session: Session, at_ms: int, opens_before_ms: int) -> Occurrence | None:
    """The occurrence open for check-in at `at_ms`: from `opens_before_ms` before its start
    until its end."""
    found = occurrence(session, local_date(session, at_ms + opens_before_ms))
    if found is not None and found.start_ms - opens_before_ms <= at_ms < found.end_ms:
        return found
    found = occurrence(session, local_date(session, at_ms))
    if found is not None and found.start_ms - opens_before_ms <= at_ms < found.end_ms:
        return found
    return None


def between(session: Session, from_ms: int, to_ms: int) -> list[Occurrence]:
    """Occurrences starting in [from_ms, to_ms), at most MAX_OCCURRENCES."""
    if not session.weekly:
        days = [session.first_date]
    else:
        day = max(session.first_date, local_date(session, from_ms) - datetime.timedelta(days=1))
        day += datetime.timedelta(days=-(day - session.first_date).days % 7)
        last = local_date(session, to_ms)
        if session.until is not None:
            last = min(last, session.until)
        days = []
        while day <= last and len(days) < MAX_OCCURRENCES:
            days.append(day)
            day += datetime.timedelta(days=7)
    found = [occurrence(session, day) for day in days]
    return [item for item in found if item is not None and from_ms <= item.start_ms < to_ms]
