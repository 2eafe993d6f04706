"""A teacher's live views over HTTP, on SQLite and on PostgreSQL: the event stream and the
check-in list carry the check-ins of its own courses' sessions and nothing of another course
(nor proofs, devices, sessionless check-ins), pages of its list stay full across a page
boundary, and admin and auditor still see everything."""

from __future__ import annotations

import asyncio
import collections.abc
import datetime
import json
import os
import typing
import zoneinfo

import aiohttp
import pytest

from central.core import clock as clock_mod
from central.http import auth
from edge_agent.protocol import b64
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from tests.central import conftest
from tests.stores import pg

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
DATE = "2027-03-22"  # a Monday
NOW = int(datetime.datetime(2027, 3, 22, 9, 5, tzinfo=BERLIN).timestamp() * 1000)
PIN = "2468"
STUDENTS = ("s1", "s2", "s3", "s4", "s5", "s6", "s7")


@pytest.fixture()
def clock() -> clock_mod.SettableClock:
    """09:05 on the day of both courses' sessions (09:00-10:00); time stands still."""
    return clock_mod.SettableClock(NOW)


@pytest.fixture(params=["sqlite", "postgres"])
async def central_overrides(
    request: pytest.FixtureRequest,
) -> collections.abc.AsyncIterator[dict[str, typing.Any]]:
    """Each test on both stores: the course filter is a query of each."""
    if request.param == "sqlite":
        yield {}
        return
    async with pg.fresh_database() as dsn:
        yield {"database_url": dsn}


class Campus:
    """Course `a` in room a-101 and course `b` in b-102, both 09:00-10:00 today, and room
    c-103 with no session; a device in each room; a teacher of `a` and an auditor."""

    def __init__(self, central: conftest.Central) -> None:
        self.central = central
        self.devices: dict[str, conftest.ScriptedDevice] = {}
        self.sessions: dict[str, int] = {}
        self.teacher = auth.new_token()
        self.auditor = auth.new_token()

    async def setup(self) -> None:
        central, site = self.central, self.central.site
        for room in ("b-102", "c-103"):
            await central.db.add_room(site, room, room.upper(), None, None, 50)
        for room in (central.room, "b-102", "c-103"):
            name = f"pi-{room}"
            code = b64.encode(os.urandom(32))
            await central.db.add_device(site, room, name, code, NOW + 3600_000)
            device = conftest.ScriptedDevice(site, room, name)
            assert (await central.enroll(device, code))["type"] == "enrolled"
            self.devices[room] = device
        for student in STUDENTS:
            await central.add_student(student, PIN)
        for course, room in (("a", central.room), ("b", "b-102")):
            body = {"site": site, "course": course, "timezone": "Europe/Berlin"}
            await self.admin("POST", "/api/v1/courses", body)
            await self.admin(
                "PUT", f"/api/v1/courses/{site}/{course}/roster", {"students": list(STUDENTS)}
            )
            session = {"site": site, "course": course, "room": room, "first_date": DATE}
            made = await self.admin(
                "POST", "/api/v1/sessions", {**session, "start": "09:00", "end": "10:00"}
            )
            self.sessions[course] = made["session"]["id"]
        await central.db.add_admin_token(
            auth.token_hash(self.teacher), "teacher", "ms. a", 1, ((site, "a"),), site
        )
        await central.db.add_admin_token(
            auth.token_hash(self.auditor), "auditor", "audit", 1, site=site
        )

    async def admin(self, method: str, path: str, body: typing.Any = None) -> typing.Any:
        status, data = await self.central.request(
            method, path, body, token=self.central.admin_token
        )
        assert status in (200, 201), (path, status, data)
        return data

    async def proofs(self) -> None:
        """Each device publishes its proof of now, so that its tokens count."""
        for device in self.devices.values():
            await self.central.publish(device.topic("proof"), device.next_proof(iat_ms=NOW))
        for device in self.devices.values():
            seq = device.seq

            async def stored(device: conftest.ScriptedDevice = device, seq: int = seq) -> bool:
                row = await self.central.db.get_device(device.site, device.device)
                return row is not None and row.last_seq == seq

            await conftest.poll(stored, 10, f"proof {seq} of {device.device}")

    async def scan(self, room: str, student: str) -> dict[str, typing.Any]:
        """A student checks in from its own phone with the QR of the room's device."""
        device = self.devices[room]
        slot = slots.slot_of(NOW, conftest.SLOT_S)
        url = qrtoken.url(self.central.url, device.site, device.device, slot, device.token(slot))
        body = {"token": url, "student_id": student, "pin": PIN}
        async with aiohttp.ClientSession() as phone:
            async with phone.post(self.central.url + "/api/v1/checkins", json=body) as response:
                answer = await response.json()
                assert response.status == 201, answer
                return typing.cast(dict[str, typing.Any], answer["checkin"])

    async def checkins_of(self, token: str, query: str = "") -> list[dict[str, typing.Any]]:
        status, body = await self.central.request("GET", f"/api/v1/checkins{query}", token=token)
        assert status == 200, body
        return typing.cast(list[dict[str, typing.Any]], body["checkins"])


class Stream:
    """`GET /api/v1/events` read in the background into (kind, data) pairs."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.events: list[tuple[str, dict[str, typing.Any]]] = []
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, central: conftest.Central, token: str) -> Stream:
        response = await central.http.get(
            central.url + "/api/v1/events", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status == 200, await response.text()
        assert await response.content.readline() == b": connected\n"  # subscribed from here on
        return cls(response)

    async def _read(self) -> None:
        kind = "message"
        async for raw in self.response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                self.events.append((kind, json.loads(line.removeprefix("data: "))))

    async def until(self, kind: str, **match: typing.Any) -> None:
        async def seen() -> bool:
            return any(
                k == kind and all(data.get(f) == v for f, v in match.items())
                for k, data in self.events
            )

        await conftest.poll(seen, 10, f"a {kind} event with {match}")

    def checkin_ids(self) -> list[int]:
        return [data["id"] for kind, data in self.events if kind == "checkin"]

    def kinds(self) -> set[str]:
        return {kind for kind, _ in self.events}

    async def close(self) -> None:
        self.task.cancel()
        self.response.close()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture()
async def campus(central: conftest.Central) -> Campus:
    made = Campus(central)
    await made.setup()
    await made.proofs()
    return made


async def test_the_teachers_stream_carries_only_its_courses(campus: Campus) -> None:
    central, site = campus.central, campus.central.site
    teacher = await Stream.open(central, campus.teacher)
    admin = await Stream.open(central, central.admin_token)
    auditor = await Stream.open(central, campus.auditor)
    try:
        await campus.proofs()  # proof events: site-wide, not a teacher's
        mine = await campus.scan(central.room, "s1")
        theirs = await campus.scan("b-102", "s2")
        nobodys = await campus.scan("c-103", "s3")
        assert mine["session_id"] == campus.sessions["a"]
        assert theirs["session_id"] == campus.sessions["b"]
        assert nobodys["session_id"] is None
        excuse = {"status": "excused", "note": "ill"}
        path = f"/api/v1/sessions/{campus.sessions['b']}/attendance/{DATE}/s2"
        await campus.admin("PUT", path, excuse)
        # The teacher's own change comes last: once it is on the stream, so is all before it.
        path = f"/api/v1/sessions/{campus.sessions['a']}/attendance/{DATE}/s4"
        status, _ = await central.request("PUT", path, excuse, token=campus.teacher)
        assert status == 200
        for stream in (teacher, admin, auditor):
            await stream.until("attendance", session_id=campus.sessions["a"], student_id="s4")

        assert teacher.checkin_ids() == [mine["id"]]
        assert teacher.kinds() == {"checkin", "attendance"}
        assert {data["session_id"] for _, data in teacher.events} == {campus.sessions["a"]}
        for stream in (admin, auditor):
            assert stream.checkin_ids() == [mine["id"], theirs["id"], nobodys["id"]]
            assert {"proof", "checkin", "attendance"} <= stream.kinds()
            attendance = [d["session_id"] for k, d in stream.events if k == "attendance"]
            assert attendance == [campus.sessions["b"], campus.sessions["a"]]
        assert all(data["site"] == site for kind, data in teacher.events if kind == "checkin")
    finally:
        for stream in (teacher, admin, auditor):
            await stream.close()


async def test_a_teacher_of_no_course_here_lists_nothing(campus: Campus) -> None:
    central = campus.central
    await campus.scan(central.room, "s1")
    await campus.scan("c-103", "s3")
    for courses in ((), (("elsewhere", "a"),), ((central.site, "c"),)):
        stranger = auth.new_token()
        await central.db.add_admin_token(
            auth.token_hash(stranger), "teacher", "mr. x", 1, courses, central.site
        )
        assert await campus.checkins_of(stranger) == [], courses
    assert len(await campus.checkins_of(central.admin_token)) == 2


async def test_the_teachers_list_and_its_pages(campus: Campus) -> None:
    central = campus.central
    # Interleaved: a, b, none, a, b, a, a; the teacher's pages skip the others' rows.
    plan = (
        (central.room, "s1"),
        ("b-102", "s2"),
        ("c-103", "s3"),
        (central.room, "s4"),
        ("b-102", "s5"),
        (central.room, "s6"),
        (central.room, "s7"),
    )
    made = [await campus.scan(room, student) for room, student in plan]
    ids_a = [c["id"] for c in made if c["session_id"] == campus.sessions["a"]]
    assert len(ids_a) == 4

    assert [c["id"] for c in await campus.checkins_of(campus.teacher)] == ids_a
    assert [c["id"] for c in await campus.checkins_of(central.admin_token)] == [
        c["id"] for c in made
    ]
    assert [c["id"] for c in await campus.checkins_of(campus.auditor)] == [c["id"] for c in made]
    # The live room view's query: the teacher's room of today, and another room (empty).
    since = f"?site={central.site}&room={central.room}&since={NOW - 3600_000}"
    assert [c["id"] for c in await campus.checkins_of(campus.teacher, since)] == ids_a
    other = f"?site={central.site}&room=b-102&since={NOW - 3600_000}"
    assert await campus.checkins_of(campus.teacher, other) == []
    assert await campus.checkins_of(campus.teacher, "?student=s2") == []

    # Pages of 3: full pages across the rows of other courses, then the rest, then the end.
    pages, after = [], 0
    while True:
        status, body = await central.request(
            "GET", f"/api/v1/checkins?limit=3&after={after}", token=campus.teacher
        )
        assert status == 200, body
        pages.append([c["id"] for c in body["checkins"]])
        if body["next_after"] is None:
            break
        after = body["next_after"]
    assert pages == [ids_a[:3], ids_a[3:]]
    # A page boundary exactly at the teacher's last row: one more, empty page ends it.
    status, body = await central.request("GET", "/api/v1/checkins?limit=2", token=campus.teacher)
    assert [c["id"] for c in body["checkins"]] == ids_a[:2]
    assert body["next_after"] == ids_a[1]
    status, body = await central.request(
        "GET", f"/api/v1/checkins?limit=2&after={ids_a[1]}", token=campus.teacher
    )
    assert [c["id"] for c in body["checkins"]] == ids_a[2:]
    status, body = await central.request(
        "GET", f"/api/v1/checkins?limit=2&after={body['next_after']}", token=campus.teacher
    )
    assert body == {"checkins": [], "next_after": None}
