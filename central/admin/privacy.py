"""A student's own data: everything central holds about them, as JSON (export), and
forgetting them entirely (erase). Used by the CLI and the admin API."""

from __future__ import annotations

import time
import typing

from central.checkin import attendance
from central.core import params
from central.storage import database
from central.storage import store

EXPORT_DAYS = 400


class NoSuchStudent(Exception):
    """The site has no student with this id."""


async def export(db: database.Database, site: str, student_id: str) -> dict[str, typing.Any]:
    student = await db.get_student(site, student_id)
    if student is None:
        raise NoSuchStudent(f"no student {site}/{student_id}")
    checkins: list[store.Checkin] = []
    after = 0
    while True:
        page = await db.list_checkins(site, None, None, 1000, after, student_id)
        checkins += page
        if len(page) < 1000:
            break
        after = page[-1].id
    now = int(time.time() * 1000)
    history = await attendance.student_history(
        db, site, student_id, now - EXPORT_DAYS * 86400_000, now, now
    )
    return {
        "site": site,
        "student_id": student_id,
        "note": "the PIN is stored only as an Argon2id hash and is not part of this export",
        "courses": await db.courses_of(site, student_id),
        "checkins": [
            {
                "id": c.id,
                "room": c.room,
                "device": c.device,
                "at": params.iso(c.created_at),
                "checked_out_at": params.iso(c.checked_out_at),
                "method": c.method,
                "status": c.status,
                "flags": list(c.flags),
                "evidence": c.evidence,
                "session_id": c.session_id,
                "session_date": c.session_date,
            }
            for c in checkins
        ],
        "attendance": [
            {
                "session_id": occurrence.session.id,
                "course": occurrence.session.course,
                "date": occurrence.key,
                "status": row.status,
            }
            for occurrence, row in history
        ],
    }


async def erase(db: database.Database, site: str, student_id: str) -> dict[str, int]:
    if await db.get_student(site, student_id) is None:
        raise NoSuchStudent(f"no student {site}/{student_id}")
    return await db.erase_student(site, student_id)
