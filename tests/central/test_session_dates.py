"""Which date a session view means: today's meeting in the session's own time zone, else its
latest past one, never the viewer's date; and a date it does not meet on is a 404 that names
the dates it does meet on. Central's clock is pinned, so the outcome does not depend on the
hour or the zone the tests run in."""

from __future__ import annotations

import csv
import datetime
import io
import zoneinfo

import pytest

from central.core import clock as clock_mod
from central.domain import timetable
from tests.central import conftest

LOS_ANGELES = zoneinfo.ZoneInfo("America/Los_Angeles")
# Tuesday 2027-03-02, 20:00 in Los Angeles: already Wednesday 04:00 in UTC, 05:00 in Berlin.
EVENING = int(datetime.datetime(2027, 3, 2, 20, 0, tzinfo=LOS_ANGELES).timestamp() * 1000)


def weekly(first: str, until: str | None, zone: str = "America/Los_Angeles") -> timetable.Session:
    return timetable.Session(
        id=7,
        site="campus",
        course="night",
        room="a-101",
        timezone=zone,
        first_date=datetime.date.fromisoformat(first),
        start=datetime.time(19, 0),
        end=datetime.time(21, 0),
        weekly=True,
        until=datetime.date.fromisoformat(until) if until else None,
        grace_min=5,
        checkout=False,
    )


def at(text: str, zone: str = "America/Los_Angeles") -> int:
    moment = datetime.datetime.fromisoformat(text).replace(tzinfo=zoneinfo.ZoneInfo(zone))
    return int(moment.timestamp() * 1000)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2027-03-02T20:00", "2027-03-02"),  # during Tuesday's class (Wednesday in UTC)
        ("2027-03-02T23:59", "2027-03-02"),  # still Tuesday where the course meets
        ("2027-03-03T00:00", "2027-03-02"),  # Wednesday there: the latest past meeting
        ("2027-03-08T12:00", "2027-03-02"),  # Monday: still last Tuesday's
        ("2027-03-09T00:01", "2027-03-09"),  # Tuesday again: today's, before it starts
        ("2027-02-01T10:00", "2027-02-16"),  # before the first meeting: the first
        ("2027-06-01T10:00", "2027-03-23"),  # after `until`: the last meeting
    ],
)
def test_default_date_is_the_courses_today_or_latest(moment: str, expected: str) -> None:
    session = weekly("2027-02-16", "2027-03-23")
    assert timetable.default_date(session, at(moment)).isoformat() == expected


def test_default_date_of_a_single_meeting() -> None:
    once = timetable.Session(
        **{**weekly("2027-03-02", None).__dict__, "weekly": False, "until": None}
    )
    for moment in ("2027-01-01T00:00", "2027-03-02T20:00", "2030-01-01T00:00"):
        assert timetable.default_date(once, at(moment)) == datetime.date(2027, 3, 2)


def test_nearest_dates_around_a_day_it_does_not_meet_on() -> None:
    session = weekly("2027-02-16", "2027-03-23")
    near = timetable.nearest_dates(session, datetime.date(2027, 3, 3))
    assert [d.isoformat() for d in near] == ["2027-02-23", "2027-03-02", "2027-03-09", "2027-03-16"]
    # At the ends of the series there is less to offer on one side.
    first = timetable.nearest_dates(session, datetime.date(2027, 1, 1))
    assert [d.isoformat() for d in first] == ["2027-02-16", "2027-02-23"]
    last = timetable.nearest_dates(session, datetime.date(2027, 12, 1))
    assert [d.isoformat() for d in last] == ["2027-03-16", "2027-03-23"]
    # Every date offered is one it meets on.
    for day in range(0, 60):
        date = datetime.date(2027, 2, 1) + datetime.timedelta(days=day)
        for found in timetable.nearest_dates(session, date):
            assert timetable.meets_on(session, found), (date, found)


@pytest.fixture()
def clock() -> clock_mod.SettableClock:
    return clock_mod.SettableClock(EVENING)


async def _evening_session(central: conftest.Central) -> int:
    site, token = central.site, central.admin_token
    await central.add_student("s1", "123456")
    course = {"site": site, "course": "night", "name": "Night", "timezone": "America/Los_Angeles"}
    status, body = await central.request("POST", "/api/v1/courses", course, token)
    assert status == 201, body
    status, body = await central.request(
        "PUT", f"/api/v1/courses/{site}/night/roster", {"students": ["s1"]}, token
    )
    assert status == 200, body
    status, body = await central.request(
        "POST",
        "/api/v1/sessions",
        {
            "site": site,
            "course": "night",
            "room": central.room,
            "first_date": "2027-02-16",
            "weekly": True,
            "start": "19:00",
            "end": "21:00",
        },
        token,
    )
    assert status == 201, body
    return int(body["session"]["id"])


async def test_attendance_without_a_date_is_the_courses_today(central: conftest.Central) -> None:
    """At 04:00 UTC on Wednesday the class in Los Angeles is running on Tuesday: that is the
    occurrence shown, whatever the viewer's date."""
    session = await _evening_session(central)
    status, body = await central.request(
        "GET", f"/api/v1/sessions/{session}/attendance", None, central.admin_token
    )
    assert status == 200, body
    assert body["occurrence"]["date"] == "2027-03-02"
    assert body["occurrence"]["timezone"] == "America/Los_Angeles"
    assert body["occurrence"]["starts_at"] == "2027-03-03T03:00:00.000+00:00"
    assert [row["status"] for row in body["attendance"]] == ["pending"]


async def test_a_date_it_does_not_meet_on_names_the_nearest(central: conftest.Central) -> None:
    session = await _evening_session(central)
    token = central.admin_token
    # The viewer's (UTC) date: Wednesday, a day the course does not meet on.
    for method, path, body in (
        ("GET", f"/api/v1/sessions/{session}/attendance?date=2027-03-03", None),
        ("PUT", f"/api/v1/sessions/{session}/attendance/2027-03-03/s1", {"status": "excused"}),
        ("GET", f"/api/v1/exports/attendance.csv?session_id={session}&date=2027-03-03", None),
    ):
        status, answer = await central.request(method, path, body, token)
        assert status == 404, (path, answer)
        error = answer["error"]
        assert error["code"] == "not_found"
        assert "America/Los_Angeles" in error["message"]
        assert error["details"]["timezone"] == "America/Los_Angeles"
        assert error["details"]["meets_on"] == [
            "2027-02-23",
            "2027-03-02",
            "2027-03-09",
            "2027-03-16",
        ], path


async def test_export_without_a_date_is_the_courses_today(central: conftest.Central) -> None:
    session = await _evening_session(central)
    async with central.http.get(
        f"{central.url}/api/v1/exports/attendance.csv?session_id={session}",
        headers={"Authorization": f"Bearer {central.admin_token}"},
    ) as response:
        assert response.status == 200, await response.text()
        disposition = response.headers["Content-Disposition"]
        text = await response.text()
    assert f"session-{session}-2027-03-02.csv" in disposition
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(row["date"], row["student_id"], row["status"]) for row in rows] == [
        ("2027-03-02", "s1", "pending")
    ]
