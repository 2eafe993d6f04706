"""A week of a course driven through HTTP, with central's clock set per step: check-ins are
attributed to the session running in the room, and statuses are right at every boundary
(opening, grace minute, session end, a DST change), plus excusals, check-out with duration,
policy flags, evidence bundles and verification links."""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import datetime
import json
import pathlib
import sqlite3
import sys
import typing
import zoneinfo

import aiohttp
import pytest

from central.checkin import evidence
from central.core import clock as clock_mod
from central.http import auth
from edge_agent.protocol import b64
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from tests.central import conftest

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def local(text: str) -> int:
    """Unix ms of a Berlin wall-clock time."""
    moment = datetime.datetime.fromisoformat(text).replace(tzinfo=BERLIN)
    return int(moment.timestamp() * 1000)


START = local("2027-03-22T08:00:00")  # Monday; Europe switches to summer time on the 28th


@pytest.fixture()
def clock() -> clock_mod.SettableClock:
    return clock_mod.SettableClock(START)


class Week:
    def __init__(
        self,
        central: conftest.Central,
        clock: clock_mod.SettableClock,
        device: conftest.ScriptedDevice,
    ) -> None:
        self.central = central
        self.clock = clock
        self.device = device
        self.phones: dict[str, aiohttp.ClientSession] = {}

    async def at(self, when: int) -> None:
        """Moves central's clock; the room's device publishes its proof of that moment."""
        self.clock.set(when)
        await self.central.publish(self.device.topic("proof"), self.device.next_proof(iat_ms=when))
        seq = self.device.seq

        async def stored() -> bool:
            row = await self.central.db.get_device(self.central.site, self.device.device)
            return row is not None and row.last_seq == seq

        await conftest.poll(stored, 10, f"proof {seq}")

    def phone(self, name: str) -> aiohttp.ClientSession:
        if name not in self.phones:
            jar = aiohttp.CookieJar(unsafe=True)
            # the browser id the check-in page gives a phone (without it: `no_browser_id`)
            jar.update_cookies({"roomproof_browser": f"phone-{name}".ljust(22, "0")[:64]})
            self.phones[name] = aiohttp.ClientSession(cookie_jar=jar)
        return self.phones[name]

    async def scan(
        self,
        student: str,
        phone: str | None = None,
        path: str = "/api/v1/checkins",
        **extra: typing.Any,
    ) -> tuple[int, typing.Any]:
        slot = slots.slot_of(self.clock.now_ms(), conftest.SLOT_S)
        url = qrtoken.url(
            self.central.url, self.device.site, self.device.device, slot, self.device.token(slot)
        )
        body = {"token": url, "student_id": student, "pin": "246810", **extra}
        async with self.phone(phone or student).post(self.central.url + path, json=body) as resp:
            return resp.status, await resp.json()

    async def api(self, method: str, path: str, body: typing.Any = None) -> typing.Any:
        status, data = await self.central.request(
            method, path, body, token=self.central.admin_token
        )
        assert status in (200, 201), (path, status, data)
        return data

    async def statuses(self, session_id: int, date: str) -> dict[str, str]:
        data = await self.api("GET", f"/api/v1/sessions/{session_id}/attendance?date={date}")
        return {row["student_id"]: row["status"] for row in data["attendance"]}

    async def close(self) -> None:
        for phone in self.phones.values():
            await phone.close()


@pytest.fixture()
async def week(
    central: conftest.Central, clock: clock_mod.SettableClock
) -> collections.abc.AsyncIterator[Week]:
    device, code = await central.add_device("pi-week", now_ms=clock.now_ms())
    await central.enroll(device, code)
    for student in ("s1", "s2", "s3", "s4", "s5"):
        await central.add_student(student, "246810")
    handle = Week(central, clock, device)
    await handle.at(START)
    yield handle
    await handle.close()


async def test_a_week_of_sessions(week: Week) -> None:
    site, room = week.central.site, week.central.room
    await week.api(
        "POST",
        "/api/v1/courses",
        {"site": site, "course": "law-101", "name": "Contract law", "timezone": "Europe/Berlin"},
    )
    await week.api(
        "PUT", f"/api/v1/courses/{site}/law-101/roster", {"students": ["s1", "s2", "s3", "s4"]}
    )
    lecture = (
        await week.api(
            "POST",
            "/api/v1/sessions",
            {
                "site": site,
                "course": "law-101",
                "room": room,
                "first_date": "2027-03-22",
                "start": "09:00",
                "end": "10:30",
                "weekly": True,
                "until": "2027-05-31",
                "grace_min": 5,
            },
        )
    )["session"]
    meeting = (
        await week.api(
            "POST",
            "/api/v1/sessions",
            {
                "site": site,
                "course": "law-101",
                "room": room,
                "first_date": "2027-03-24",
                "start": "14:00",
                "end": "15:00",
                "checkout": True,
                "grace_min": 0,
            },
        )
    )["session"]
    occurrences = await week.api(
        "GET",
        f"/api/v1/sessions/{lecture['id']}/occurrences"
        "?from=2027-03-20T00:00:00Z&to=2027-04-01T00:00:00Z",
    )
    starts = [o["starts_at"] for o in occurrences["occurrences"]]
    assert starts == ["2027-03-22T08:00:00.000+00:00", "2027-03-29T07:00:00.000+00:00"]

    # Monday 22 March (CET). Before the check-in window opens: no session to attribute to.
    await week.at(local("2027-03-22T08:44:59"))
    status, body = await week.scan("s1", phone="early")
    assert status == 201 and body["checkin"]["session_id"] is None and "session" not in body
    await week.at(local("2027-03-22T08:45:00"))  # opens 15 min before the start
    status, body = await week.scan("s1")
    assert status == 201 and body["checkin"]["status"] == "present", body
    assert body["session"]["id"] == lecture["id"] and body["session"]["date"] == "2027-03-22"
    status, body = await week.scan("s1")
    assert status == 409 and body["error"]["code"] == "duplicate"  # once per session
    await week.at(local("2027-03-22T09:05:00"))  # the last second of the grace period
    assert (await week.scan("s2"))[1]["checkin"]["status"] == "present"
    await week.at(local("2027-03-22T09:05:01"))
    assert (await week.scan("s3"))[1]["checkin"]["status"] == "late"
    status, body = await week.scan("s5")  # not on the roster: recorded, flagged
    assert body["checkin"]["status"] == "flagged"
    assert body["checkin"]["flags"] == ["student is not on the course roster"]
    await week.at(local("2027-03-22T10:29:59"))
    assert (await week.statuses(lecture["id"], "2027-03-22"))["s4"] == "pending"
    await week.at(local("2027-03-22T10:30:00"))  # the session has ended: s4 is absent
    assert await week.statuses(lecture["id"], "2027-03-22") == {
        "s1": "present",
        "s2": "present",
        "s3": "late",
        "s4": "absent",
        "s5": "flagged",
    }
    status, body = await week.scan("s4")  # too late: the session is over
    assert status == 201 and body["checkin"]["session_id"] is None
    await week.api(
        "PUT",
        f"/api/v1/sessions/{lecture['id']}/attendance/2027-03-22/s4",
        {"status": "excused", "note": "medical certificate"},
    )
    report = await week.api("GET", f"/api/v1/sessions/{lecture['id']}/attendance?date=2027-03-22")
    assert report["summary"]["excused"] == 1 and report["summary"]["absent"] == 0
    s4 = next(r for r in report["attendance"] if r["student_id"] == "s4")
    assert s4["override"]["note"] == "medical certificate"

    # Wednesday: a compliance meeting with check-out; one phone used for two students.
    await week.at(local("2027-03-24T14:00:00"))
    assert (await week.scan("s1"))[1]["checkin"]["status"] == "present"
    status, body = await week.scan("s2", phone="s1")
    assert body["checkin"]["status"] == "flagged"
    assert body["checkin"]["flags"] == ["this browser also checked in 1 other student(s)"]
    await week.at(local("2027-03-24T15:10:00"))
    status, body = await week.scan("s1", path="/api/v1/checkouts")
    assert status == 201 and body["checkout"]["duration_s"] == 70 * 60
    status, body = await week.scan("s1", path="/api/v1/checkouts")
    assert status == 409 and body["error"]["code"] == "duplicate"
    status, body = await week.scan("s3", path="/api/v1/checkouts")
    assert status == 409 and body["error"]["code"] == "not_checked_in"
    report = await week.api("GET", f"/api/v1/sessions/{meeting['id']}/attendance?date=2027-03-24")
    s1 = next(r for r in report["attendance"] if r["student_id"] == "s1")
    assert s1["duration_s"] == 4200 and s1["checked_out_at"] == "2027-03-24T14:10:00.000+00:00"

    # Monday 29 March (CEST since Sunday): 09:00 local is now 07:00 UTC.
    await week.at(local("2027-03-29T09:05:00"))
    assert (await week.scan("s1"))[1]["checkin"]["status"] == "present"
    await week.at(local("2027-03-29T09:05:01"))
    assert (await week.scan("s2"))[1]["checkin"]["status"] == "late"
    await week.at(local("2027-03-29T10:30:00"))
    assert await week.statuses(lecture["id"], "2027-03-29") == {
        "s1": "present",
        "s2": "late",
        "s3": "absent",
        "s4": "absent",
    }

    history = await week.api(
        "GET", f"/api/v1/students/{site}/s2/attendance?from=2027-03-01T00:00:00Z&limit=2"
    )
    assert [(r["date"], r["status"]) for r in history["attendance"]] == [
        ("2027-03-22", "present"),
        ("2027-03-24", "flagged"),
    ]
    assert history["next_offset"] == 2
    assert history["summary"] == {"present": 1, "flagged": 1, "late": 1}


async def verify_cli(bundle: pathlib.Path, args: list[str]) -> tuple[int, str]:
    """`python -m central verify` as an auditor runs it: no database, no settings."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "central",
        "verify",
        str(bundle),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return typing.cast(int, process.returncode), out.decode()


async def test_evidence_bundle_and_verification_links(week: Week, tmp_path: pathlib.Path) -> None:
    central = week.central
    await week.at(START + 60_000)
    status, body = await week.scan(
        "s1", geo={"lat": 1.0, "lon": 2.0, "accuracy_m": 10, "consent": True}
    )
    assert status == 201, body
    checkin = body["checkin"]
    assert checkin["evidence"]["geo_band"] == "unknown"  # the room has no coordinates
    assert "lat" not in json.dumps(checkin["evidence"])  # coordinates are never stored
    status, body = await week.scan("s2", geo={"lat": 1.0, "lon": 2.0, "accuracy_m": 10})
    assert status == 400 and body["error"]["details"]["field"] == "geo"  # no consent

    status, bundle = await central.request(
        "GET", f"/api/v1/checkins/{checkin['id']}/evidence", token=central.admin_token
    )
    assert status == 200
    raw = json.dumps(bundle, sort_keys=True, separators=(",", ":")).encode()
    keys = (await central.request("GET", "/api/v1/keys"))[1]
    verified = evidence.verify_bundle(raw, week.device.signing.public, b64.decode(keys["ed25519"]))
    assert verified.record["record"] == checkin["id"] and verified.record["student_id"] == "s1"
    status, again = await central.request(
        "GET", f"/api/v1/checkins/{checkin['id']}/evidence", token=central.admin_token
    )
    assert again == bundle  # countersigned once
    path_bundle = tmp_path / "record.json"
    path_bundle.write_bytes(raw)
    args = [
        "--device-key",
        b64.encode(week.device.signing.public),
        "--central-key",
        keys["ed25519"],
    ]
    code, out = await verify_cli(path_bundle, args)
    assert code == 0 and out.startswith("VALID"), out
    middle = len(raw) // 2
    path_bundle.write_bytes(raw[:middle] + bytes([raw[middle] ^ 1]) + raw[middle + 1 :])
    code, out = await verify_cli(path_bundle, args)
    assert code == 1 and out.startswith("INVALID"), out

    link = (await week.api("POST", f"/api/v1/checkins/{checkin['id']}/links", {"ttl_days": 1}))[
        "link"
    ]
    path = link["url"].removeprefix(central.url)
    status, page = await central.request("GET", path)
    assert status == 200 and "Record verified" in page and "s1" in page
    status, result = await central.request("GET", path + "?format=json")
    assert result["valid"] is True and result["record"]["room"] == central.room
    status, data = await central.request("GET", path + "/bundle.json")
    assert status == 200 and data == bundle
    status, page = await central.request("GET", path[:-2] + "xx")
    assert status == 404 and "not valid" in page

    week.clock.advance(86400_000 + 1)  # the link has expired
    status, result = await central.request("GET", path + "?format=json")
    assert status == 404 and "expired" in result["message"]
    week.clock.advance(-(86400_000 + 1))
    await week.api("DELETE", f"/api/v1/links/{link['id']}")
    status, result = await central.request("GET", path + "?format=json")
    assert status == 404 and "revoked" in result["message"]
    status, body = await central.request(
        "DELETE", f"/api/v1/links/{link['id']}", token=central.admin_token
    )
    assert status == 404


async def test_bad_timetable_input_is_refused(week: Week) -> None:
    central = week.central
    site, room = central.site, central.room
    await week.api("POST", "/api/v1/courses", {"site": site, "course": "c1", "timezone": "UTC"})
    base = {"site": site, "course": "c1", "room": room, "first_date": "2027-03-22"}
    cases = [
        ({**base, "start": "10:00", "end": "09:00"}, "end"),
        ({**base, "start": "25:00", "end": "26:00"}, "start"),
        ({**base, "start": "09:00", "end": "10:00", "timezone": "Mars/Olympus"}, "timezone"),
        (
            {**base, "start": "09:00", "end": "10:00", "until": "2027-01-01", "weekly": True},
            "until",
        ),
        ({**base, "first_date": "22/03/2027", "start": "09:00", "end": "10:00"}, "first_date"),
    ]
    for body, field in cases:
        status, error = await central.request(
            "POST", "/api/v1/sessions", body, token=central.admin_token
        )
        assert status == 400 and error["error"]["details"]["field"] == field, (body, error)
    status, error = await central.request(
        "POST",
        "/api/v1/courses",
        {"site": site, "course": "c2", "timezone": "Nowhere/City"},
        token=central.admin_token,
    )
    assert status == 400
    status, error = await central.request(
        "PUT",
        f"/api/v1/courses/{site}/c1/roster",
        {"students": ["ghost"]},
        token=central.admin_token,
    )
    assert status == 404 and error["error"]["code"] == "unknown_students"
    status, error = await central.request(
        "PUT",
        f"/api/v1/courses/{site}/c1/roster",
        {"students": ["s1"]},
    )
    assert status == 401
    assert await central.db.list_sessions(site, None, None, 10, 0) == []


async def test_a_student_is_exported_then_erased_without_a_trace(week: Week) -> None:
    central = week.central
    site = central.site
    await week.api("POST", "/api/v1/courses", {"site": site, "course": "c9", "timezone": "UTC"})
    await week.api("PUT", f"/api/v1/courses/{site}/c9/roster", {"students": ["s1", "s2"]})
    await week.at(START + 60_000)
    first = (await week.scan("s1"))[1]["checkin"]
    assert (await week.scan("s2"))[0] == 201
    link = (await week.api("POST", f"/api/v1/checkins/{first['id']}/links", {}))["link"]

    status, data = await central.request(
        "GET", f"/api/v1/students/{site}/s1/export", token=central.admin_token
    )
    assert status == 200 and data["courses"] == ["c9"]
    assert [c["id"] for c in data["checkins"]] == [first["id"]]
    assert "pin" not in json.dumps(data).replace("the PIN is stored only", "")

    status, data = await central.request(
        "DELETE", f"/api/v1/students/{site}/s1", token=central.admin_token
    )
    assert status == 200
    assert data["deleted"]["checkins"] == 1 and data["deleted"]["verify_links"] == 1
    assert data["deleted"]["enrolments"] == 1 and data["deleted"]["students"] == 1
    status, _ = await central.request(
        "GET", f"/api/v1/students/{site}/s1/export", token=central.admin_token
    )
    assert status == 404
    assert (await central.request("GET", link["url"].removeprefix(central.url)))[0] == 404
    assert [c.student_id for c in await central.db.list_checkins(site, None, None, 100)] == ["s2"]
    assert await central.db.roster(site, "c9") == ["s2"]
    status, again = await week.scan("s1")  # the remembered browser no longer works
    assert status == 401 and again["error"]["code"] == "bad_credentials"
    # Nothing of s1 is left in any table of the database file.
    with contextlib.closing(sqlite3.connect(central.settings.db_path)) as raw:
        dump = "\n".join(raw.iterdump())
    assert "'s1'" not in dump and '"s1"' not in dump


async def test_teachers_see_only_their_courses(week: Week) -> None:
    central = week.central
    site, room = central.site, central.room
    sessions = {}
    for course in ("mine", "theirs"):
        body = {"site": site, "course": course, "timezone": "Europe/Berlin"}
        await week.api("POST", "/api/v1/courses", body)
        await week.api("PUT", f"/api/v1/courses/{site}/{course}/roster", {"students": ["s1"]})
    for course, start, end in (("mine", "09:00", "10:00"), ("theirs", "10:00", "11:00")):
        body = {"site": site, "course": course, "room": room, "first_date": "2027-03-22"}
        made = await week.api("POST", "/api/v1/sessions", {**body, "start": start, "end": end})
        sessions[course] = made["session"]["id"]
    await week.at(local("2027-03-22T09:01:00"))
    mine = (await week.scan("s1"))[1]["checkin"]
    assert mine["session_id"] == sessions["mine"]
    await week.at(local("2027-03-22T10:01:00"))
    theirs = (await week.scan("s1", phone="s1-later"))[1]["checkin"]
    assert theirs["session_id"] == sessions["theirs"]

    teacher = auth.new_token()
    await central.db.add_admin_token(
        auth.token_hash(teacher), "teacher", "ms. a", 1, ((site, "mine"),), site
    )

    async def as_teacher(method: str, path: str, body: object = None) -> tuple[int, typing.Any]:
        return await central.request(method, path, body, token=teacher)

    status, body = await as_teacher("GET", "/api/v1/courses")
    assert [c["course"] for c in body["courses"]] == ["mine"]
    status, body = await as_teacher("GET", "/api/v1/sessions")
    assert [s["id"] for s in body["sessions"]] == [sessions["mine"]]
    date = "2027-03-22"
    assert (await as_teacher("GET", f"/api/v1/sessions/{sessions['mine']}/attendance?date={date}"))[
        0
    ] == 200
    status, body = await as_teacher(
        "GET", f"/api/v1/sessions/{sessions['theirs']}/attendance?date={date}"
    )
    assert status == 403 and body["error"]["code"] == "not_your_course"
    excuse = {"status": "excused"}
    assert (
        await as_teacher("PUT", f"/api/v1/sessions/{sessions['mine']}/attendance/{date}/s1", excuse)
    )[0] == 200
    assert (
        await as_teacher(
            "PUT", f"/api/v1/sessions/{sessions['theirs']}/attendance/{date}/s1", excuse
        )
    )[0] == 403
    assert (await as_teacher("GET", f"/api/v1/courses/{site}/theirs/roster"))[0] == 403
    assert (await as_teacher("PUT", f"/api/v1/courses/{site}/theirs/roster", {"students": []}))[
        0
    ] == 403
    status, body = await as_teacher(
        "GET", f"/api/v1/students/{site}/s1/attendance?from=2027-03-01T00:00:00Z"
    )
    assert {row["course"] for row in body["attendance"]} == {"mine"}
    # The check-in list holds only the teacher's courses (tests/central/test_teacher_views.py
    # covers the event stream and pagination).
    status, body = await as_teacher("GET", "/api/v1/checkins")
    assert status == 200 and [c["id"] for c in body["checkins"]] == [mine["id"]]
    assert (await as_teacher("GET", f"/api/v1/checkins/{mine['id']}/evidence"))[0] == 200
    assert (await as_teacher("GET", f"/api/v1/checkins/{theirs['id']}/evidence"))[0] == 403
    assert (await as_teacher("POST", f"/api/v1/checkins/{theirs['id']}/links", {}))[0] == 403
    # The admin still sees everything.
    status, body = await central.request("GET", "/api/v1/sessions", token=central.admin_token)
    assert len(body["sessions"]) == 2
