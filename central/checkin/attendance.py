"""Attendance of timetable sessions: which occurrence a check-in belongs to, and each roster
student's status in an occurrence (present, late, flagged, excused, absent once it has ended,
pending before)."""

from __future__ import annotations

import dataclasses
import typing

from central.domain import timetable
from central.storage import database
from central.storage import store

TEACHER_STATUSES = frozenset({"present", "late", "excused", "absent"})


@dataclasses.dataclass(frozen=True)
class Row:
    student_id: str
    status: str  # present | late | flagged | excused | absent | pending
    on_roster: bool
    checkin: store.Checkin | None
    override: store.Override | None

    def json(self, iso: typing.Callable[[int | None], str | None]) -> dict[str, typing.Any]:
        checkin = self.checkin
        duration = None
        if checkin is not None and checkin.checked_out_at is not None:
            duration = (checkin.checked_out_at - checkin.created_at) // 1000
        return {
            "student_id": self.student_id,
            "status": self.status,
            "on_roster": self.on_roster,
            "checkin_id": checkin.id if checkin else None,
            "checked_in_at": iso(checkin.created_at) if checkin else None,
            "checked_out_at": iso(checkin.checked_out_at) if checkin else None,
            "duration_s": duration,
            "flags": list(checkin.flags) if checkin else [],
            "checkin_status": checkin.status if checkin else None,
            "override": (
                {
                    "status": self.override.status,
                    "note": self.override.note,
                    "set_by": self.override.set_by,
                    "set_at": iso(self.override.set_at),
                }
                if self.override
                else None
            ),
        }


async def room_sessions(db: database.Database, site: str, room: str) -> list[timetable.Session]:
    found: list[timetable.Session] = []
    after = 0
    while True:
        page = await db.list_sessions(site, None, room, 500, after)
        found += page
        if len(page) < 500:
            return found
        after = page[-1].id


def running_of(
    sessions: list[timetable.Session], now_ms: int, opens_before_ms: int
) -> timetable.Occurrence | None:
    """The occurrence open for check-in now among a room's sessions (the earliest if several)."""
    found = [
        item
        for item in (timetable.running(s, now_ms, opens_before_ms) for s in sessions)
        if item is not None
    ]
    return min(found, key=lambda o: (o.start_ms, o.session.id)) if found else None


async def checkout_target(
    db: database.Database, site: str, room: str, now_ms: int, after_end_ms: int
) -> timetable.Occurrence | None:
    """A check-out session occurrence in this room that is running or ended recently."""
    for session in await room_sessions(db, site, room):
        if not session.checkout:
            continue
        item = timetable.running(session, now_ms - after_end_ms, 0) or timetable.running(
            session, now_ms, 0
        )
        if item is not None and item.start_ms <= now_ms < item.end_ms + after_end_ms:
            return item
    return None


def status_of(
    checkin: store.Checkin | None,
    override: store.Override | None,
    occurrence: timetable.Occurrence,
    now_ms: int,
) -> str:
    if override is not None:
        return override.status
    if checkin is not None:
        return checkin.status
    return "absent" if now_ms >= occurrence.end_ms else "pending"


async def report(db: database.Database, occurrence: timetable.Occurrence, now_ms: int) -> list[Row]:
    """Every roster student plus anyone else who checked in, with their status."""
    session = occurrence.session
    roster = set(await db.roster(session.site, session.course))
    checkins = {c.student_id: c for c in await db.occurrence_checkins(session.id, occurrence.key)}
    overrides = {o.student_id: o for o in await db.overrides(session.id, occurrence.key)}
    rows = []
    for student in sorted(roster | set(checkins) | set(overrides)):
        checkin, override = checkins.get(student), overrides.get(student)
        rows.append(
            Row(
                student,
                status_of(checkin, override, occurrence, now_ms),
                student in roster,
                checkin,
                override,
            )
        )
    return rows


def summary(rows: list[Row]) -> dict[str, int]:
    counts = {s: 0 for s in ("present", "late", "flagged", "excused", "absent", "pending")}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts


async def student_history(
    db: database.Database, site: str, student_id: str, from_ms: int, to_ms: int, now_ms: int
) -> list[tuple[timetable.Occurrence, Row]]:
    """The student's status in every occurrence of their courses that started in the range."""
    history: list[tuple[timetable.Occurrence, Row]] = []
    for course in await db.courses_of(site, student_id):
        for session in await db.list_sessions(site, course, None, 10_000, 0):
            for occurrence in timetable.between(session, from_ms, min(to_ms, now_ms + 1)):
                checkins = await db.occurrence_checkins(session.id, occurrence.key)
                checkin = next((c for c in checkins if c.student_id == student_id), None)
                overrides = await db.overrides(session.id, occurrence.key)
                override = next((o for o in overrides if o.student_id == student_id), None)
                status = status_of(checkin, override, occurrence, now_ms)
                history.append((occurrence, Row(student_id, status, True, checkin, override)))
    history.sort(key=lambda item: (item[0].start_ms, item[0].session.id))
    return history
