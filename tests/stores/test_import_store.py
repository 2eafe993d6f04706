"""The store methods the CSV import needs, and the import itself, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import pathlib
import sqlite3

from central.checkin import students
from central.domain import timetable
from central.http import csvimport
from central.storage import database
from central.storage import store
from tests.stores import test_contract

SITE = test_contract.SITE
ROOM = test_contract.ROOM


async def test_update_methods(db: database.Database) -> None:
    await test_contract.provision(db)
    await db.add_room(SITE, "b-2", "B 2", None, None, 50.0)
    assert await db.site_exists(SITE) and not await db.site_exists("elsewhere")

    await db.add_student(SITE, "s1", "old-hash")
    assert await db.set_student_pin(SITE, "s1", "new-hash")
    assert (await db.get_student(SITE, "s1")).pin_hash == "new-hash"  # type: ignore[union-attr]
    assert not await db.set_student_pin(SITE, "ghost", "x")

    course = store.Course(SITE, "law-101", "Law", "UTC")
    await db.add_course(course)
    renamed = dataclasses.replace(course, name="Law I", timezone="Europe/Berlin")
    assert await db.update_course(renamed)
    assert await db.get_course(SITE, "law-101") == renamed
    assert not await db.update_course(dataclasses.replace(course, course="nope"))

    session = await db.add_session(
        timetable.Session(
            0,
            SITE,
            "law-101",
            ROOM,
            "Europe/Berlin",
            datetime.date(2027, 3, 22),
            datetime.time(9, 0),
            datetime.time(10, 30),
            True,
            None,
            5,
            False,
        )
    )
    changed = dataclasses.replace(
        session,
        room="b-2",
        end=datetime.time(11, 0),
        until=datetime.date(2027, 5, 31),
        grace_min=10,
        checkout=True,
    )
    assert await db.update_session(changed)
    assert await db.get_session(session.id) == changed
    assert not await db.update_session(dataclasses.replace(changed, id=session.id + 100))
    try:
        await db.update_session(dataclasses.replace(changed, room="no-such-room"))
    except store.NotFound:
        pass
    else:
        raise AssertionError("a session moved into a room that does not exist")
    assert await db.get_session(session.id) == changed


async def test_import_runs_on_both_stores(db: database.Database) -> None:
    await test_contract.provision(db)
    files = {
        "students": f"site,student_id,pin\n{SITE},s1,246810\n{SITE},s2,\n",
        "courses": f"site,course,name,timezone\n{SITE},law-101,Law,Europe/Berlin\n",
        "enrolments": f"site,course,student_id\n{SITE},law-101,s1\n{SITE},law-101,s2\n",
        "sessions": (
            "site,course,room,first_date,start,end,weekly,until\n"
            f"{SITE},law-101,{ROOM},2027-03-22,09:00,10:30,true,2027-05-31\n"
        ),
    }
    for kind, text in files.items():
        first = await csvimport.run(db, kind, text.encode(), dry_run=False)
        assert first.applied and first.created == first.rows and not first.errors, first
        again = await csvimport.run(db, kind, text.encode(), dry_run=False)
        assert again.unchanged == again.rows and again.created == again.updated == 0, again
    assert await students.verify_pin(db, SITE, "s1", "246810")
    # s2 has no PIN yet: a locked one that no PIN opens, until an import gives it one.
    assert not await students.verify_pin(db, SITE, "s2", "246810")
    assert await db.roster(SITE, "law-101") == ["s1", "s2"]
    moved = files["sessions"].replace("10:30", "10:45")
    result = await csvimport.run(db, "sessions", moved.encode(), dry_run=False)
    assert (result.created, result.updated, result.unchanged) == (0, 1, 0)
    [session] = await db.list_sessions(SITE, "law-101", None, 10, 0)
    assert session.end == datetime.time(10, 45)


async def test_a_write_refused_after_the_check_interrupts_cleanly(tmp_path: pathlib.Path) -> None:
    """Another writer (here a second connection to the same SQLite file) adds a course between
    the check and the writes: the import stops with a clear message, and running it again
    completes it."""
    path = tmp_path / "central.db"
    db = database.Database.sqlite(path)
    await db.open()
    try:
        await test_contract.provision(db)
        text = f"site,course,name\n{SITE},law-101,Law\n{SITE},eco-201,Economics\n".encode()

        def progress(phase: str, done: int, total: int) -> None:
            if phase == "check" and done == total:
                with contextlib.closing(sqlite3.connect(path)) as other, other:
                    other.execute(
                        "INSERT INTO courses (site, course, name, timezone) VALUES (?, ?, ?, ?)",
                        (SITE, "law-101", "Law", "UTC"),
                    )

        try:
            await csvimport.run(db, "courses", text, False, progress)
        except csvimport.Interrupted as exc:
            assert "0 of 2 writes were made" in str(exc) and "run the import again" in str(exc)
        else:
            raise AssertionError("the refused write went unnoticed")
        again = await csvimport.run(db, "courses", text, dry_run=False)
        assert again.applied and (again.created, again.updated, again.unchanged) == (1, 0, 1)
        assert [c.course for c in await db.list_courses(SITE)] == ["eco-201", "law-101"]
    finally:
        await db.close()
