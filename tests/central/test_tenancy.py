"""Sites are sealed (issue 13, F1 and F6), on SQLite and on PostgreSQL.

Two sites, A (the `central` fixture's) and B, each with a room, an enrolled device, a student,
courses, a session, a check-in with a verification link, an alert, a webhook and tokens. The
scoping matrix walks every operation of the OpenAPI document that needs a token (so a new route
is covered without editing this file) as site A's admin, auditor and teacher against site B's
resources, and checks the answer (404, or 403 for a role refusal; never B's data) and that the
database did not change. The regression tests replay each attack of the security test.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import datetime
import functools
import itertools
import json
import pathlib
import re
import sqlite3
import subprocess
import sys
import time
import typing

import aiohttp
import asyncpg
import pytest

from central.checkin import students
from central.domain import timetable
from central.http import auth
from central.storage import store
from edge_agent.protocol import b64
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from tests import broker as broker_mod
from tests.central import conftest
from tests.stores import pg

PIN = "246813"
DATE = "2027-03-22"  # a Monday: the sessions' first meeting
IGNORED_TABLES = frozenset({"webhook_cursors", "schema_version"})  # central's own timers


@pytest.fixture(params=["sqlite", "postgres"])
async def central_overrides(
    request: pytest.FixtureRequest,
) -> collections.abc.AsyncIterator[dict[str, typing.Any]]:
    """The in-process central on each store; no silence alert while the matrix runs."""
    if request.param == "sqlite":
        yield {"offline_grace_s": 3600, "webhook_poll_s": 0.2}
        return
    async with pg.fresh_database() as dsn:
        yield {"offline_grace_s": 3600, "webhook_poll_s": 0.2, "database_url": dsn}


class Site(typing.NamedTuple):
    site: str
    room: str
    device: conftest.ScriptedDevice
    student: str
    course: str  # the teacher's course
    session: int
    checkin: int
    link: int
    alert: int
    webhook: int
    admin: str
    auditor: str
    teacher: str
    spare: str  # the id of one more admin token of the site
    markers: tuple[str, ...]  # text only this site's data contains


async def token(
    central: conftest.Central,
    role: str,
    site: str | None,
    name: str,
    courses: tuple[tuple[str, str], ...] = (),
) -> str:
    secret = auth.new_token()
    await central.db.add_admin_token(auth.token_hash(secret), role, name, 1, courses, site)
    return secret


async def checkin(central: conftest.Central, device: conftest.ScriptedDevice, student: str) -> int:
    """A check-in of `student` on `device`'s screen, with the proof of its slot stored."""
    compact = device.next_proof()
    await central.publish(device.topic("proof"), compact)

    async def stored() -> bool:
        return await central.db.get_proof(device.site, device.device, device.seq) is not None

    await conftest.poll(stored, 10, "the proof to be stored")
    slot = slots.slot_of(int(time.time() * 1000), conftest.SLOT_S)
    url = qrtoken.url(central.url, device.site, device.device, slot, device.token(slot))
    central.http.cookie_jar.clear()
    status, body = await central.request(
        "POST", "/api/v1/checkins", {"token": url, "student_id": student, "pin": PIN}
    )
    assert status == 201, body
    await central.publish(device.topic("proof"), device.next_proof())  # this slot's, if new
    seq = device.seq

    async def stored() -> bool:  # before anyone dumps the tables to compare them
        row = await central.db.get_device(device.site, device.device)
        return row is not None and row.last_seq == seq

    await conftest.poll(stored, 10, f"proof {seq} of {device.site}/{device.device}")
    return int(body["checkin"]["id"])


async def make_site(central: conftest.Central, site: str, room: str, tag: str) -> Site:
    """Site `site` (created unless it is the fixture's) with one of everything."""
    db = central.db
    if site != central.site:
        await db.add_site(site, f"Campus {tag}")
        await db.add_room(site, room, f"Hall {tag}", None, None, 50)
    code = b64.encode(bytes(range(32)))
    name = f"pi-{tag}"
    await db.add_device(site, room, name, code, int(time.time() * 1000) + 3600_000)
    device = conftest.ScriptedDevice(site, room, name)
    assert (await central.enroll(device, code))["type"] == "enrolled"
    student = f"st-{tag}"
    await db.add_student(site, student, students.hash_pin(PIN))
    for course in (f"{tag}1", f"{tag}2"):
        await db.add_course(store.Course(site, course, f"Course {course} {tag}", "UTC"))
        await db.set_roster(site, course, [student])
    session = await db.add_session(
        timetable.Session(
            0,
            site,
            f"{tag}1",
            room,
            "UTC",
            datetime.date.fromisoformat(DATE),
            datetime.time(9),
            datetime.time(10),
            True,
            None,
            5,
            False,
        )
    )
    made = await checkin(central, device, student)

    async def link() -> int | None:
        status, body = await central.request(
            "POST", f"/api/v1/checkins/{made}/links", {}, token=central.operator_token
        )
        return int(body["link"]["id"]) if status == 201 else None

    link_id = await conftest.poll(link, 10, "a verification link")
    alert = await db.raise_alert(site, name, "fork", f"test alert {tag}", 1)
    assert alert is not None
    hook = await db.add_webhook(
        f"https://hooks.example/{tag}", ("session_closed",), f"hook {tag}", "whsec_x", 1, site
    )
    spare = await token(central, "admin", site, f"spare {tag}")
    return Site(
        site,
        room,
        device,
        student,
        f"{tag}1",
        session.id,
        made,
        link_id,
        alert.id,
        hook.id,
        await token(central, "admin", site, f"admin {tag}"),
        await token(central, "auditor", site, f"auditor {tag}"),
        await token(central, "teacher", site, f"teacher {tag}", ((site, f"{tag}1"),)),
        auth.token_hash(spare)[: store.TOKEN_ID_CHARS],
        (f"Hall {tag}", f"Course {tag}1 {tag}", f"spare {tag}", f"hook {tag}", f'"site": "{site}"'),
    )


@pytest.fixture()
async def sites(central: conftest.Central) -> tuple[Site, Site]:
    """Site A (the fixture's, whose admin is `central.admin_token`) and site B."""
    a = await make_site(central, central.site, central.room, "aa")
    a = a._replace(admin=central.admin_token)
    b = await make_site(central, "b" + central.site[1:], "b-101", "bb")
    return a, b


async def dump(central: conftest.Central) -> dict[str, list[str]]:
    """Every row of every table of the store (minus central's own timers), for comparison."""
    tables: dict[str, list[str]] = {}
    if central.settings.database_url:
        conn = await asyncpg.connect(central.settings.database_url)
        try:
            names = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            for (name,) in names:
                if name not in IGNORED_TABLES:
                    rows = await conn.fetch(f'SELECT * FROM "{name}"')
                    tables[name] = sorted(repr(tuple(row)) for row in rows)
        finally:
            await conn.close()
        return tables
    with contextlib.closing(sqlite3.connect(central.settings.db_path)) as raw:
        names = raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        for (name,) in names:
            if name not in IGNORED_TABLES and not name.startswith("sqlite_"):
                rows = raw.execute(f'SELECT * FROM "{name}"').fetchall()
                tables[name] = sorted(repr(row) for row in rows)
    return tables


# -- the scoping matrix ---------------------------------------------------------------------
ID_OF = {  # the collection an {id} path parameter names -> the field of Site holding it
    "sessions": "session",
    "alerts": "alert",
    "checkins": "checkin",
    "links": "link",
    "webhooks": "webhook",
    "tokens": "spare",
}
BODY_DEFAULTS: dict[str, typing.Any] = {
    "url": "https://hooks.example/matrix",
    "events": ["checkin"],
    "status": "excused",
    "action": "confirm",
    "kind": "status_report",
    "radius_m": 80,
    "first_date": DATE,
    "start": "11:00",
    "end": "12:00",
    "name": "matrix",
    "timezone": "UTC",
}
SCHEMA_DEFAULTS = {"string": "x", "integer": 1, "number": 1, "boolean": False, "array": []}


def values(target: Site) -> dict[str, typing.Any]:
    """What each parameter or body field named so is filled with: the target site's."""
    return {
        "site": target.site,
        "room": target.room,
        "device": target.device.device,
        "course": target.course,
        "student": target.student,
        "student_id": target.student,
        "students": [target.student],
        "session_id": target.session,
        "date": DATE,
        "kind": "students",
    }


def requests(
    path: str, operation: dict[str, typing.Any], target: Site
) -> list[tuple[str, dict[str, str], typing.Any, bool]]:
    """(url path, query, body, addressed) variants of one operation aimed at `target`:
    every fillable query parameter at once, each alone and each pair. `addressed`: the path
    names the target's resources (?site= alone may still make an invalid request: 400)."""
    fill = values(target)
    url = path
    addressed = False
    for param in operation["parameters"]:
        if param["in"] == "path":
            name = param["name"]
            value = getattr(target, ID_OF[path.split("/")[3]]) if name == "id" else fill[name]
            url = url.replace("{" + name + "}", str(value))
            addressed = addressed or name != "kind"
    query = [
        p["name"]
        for p in operation["parameters"]
        if p["in"] == "query" and p["name"] in fill and p["name"] != "kind"
    ]
    body: typing.Any = None
    content = operation.get("requestBody", {}).get("content", {})
    if "text/csv" in content:
        body = f"site,student_id,pin\n{target.site},{target.student},135790\n"
    elif "application/json" in content:
        schema = content["application/json"]["schema"]
        body = {
            key: fill.get(key, BODY_DEFAULTS.get(key, SCHEMA_DEFAULTS.get(prop.get("type"), "x")))
            for key, prop in schema.get("properties", {}).items()
            if key in schema.get("required", []) or key in fill
        }
    required = {p["name"] for p in operation["parameters"] if p.get("required")}
    combos = {tuple(query)} | {(q,) for q in query} | set(itertools.combinations(query, 2))
    return [
        (
            url,
            {q: str(fill[q]) for q in {*combo, *required} & set(query)},
            body,
            addressed,
        )
        for combo in sorted(combos)
    ]


async def call(
    central: conftest.Central,
    method: str,
    url: str,
    query: dict[str, str],
    body: typing.Any,
    secret: str,
) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {secret}"}
    kwargs: dict[str, typing.Any] = {"params": query, "headers": headers}
    if isinstance(body, str):
        kwargs["data"] = body
        headers["Content-Type"] = "text/csv"
    elif body is not None:
        kwargs["json"] = body
    async with central.http.request(method, central.url + url, **kwargs) as response:
        if response.content_type == "text/event-stream":  # the live stream: its first lines
            text = (await asyncio.wait_for(response.content.readline(), 5)).decode()
            return response.status, text
        return response.status, await response.text()


def ghost_of(target: Site) -> Site:
    """The target's site with resources that do not exist."""
    room = "ghost-room"
    device = conftest.ScriptedDevice(target.site, room, "ghost-device")
    return target._replace(
        room=room,
        device=device,
        student="ghost-student",
        course="ghost-course",
        **{field: 10**6 + n for n, field in enumerate(("session", "checkin", "link", "alert"))},
        webhook=10**6 + 9,
        spare="f" * store.TOKEN_ID_CHARS,
    )


def placeholders(target: Site, error: dict[str, typing.Any]) -> tuple[str, str]:
    """An error's code and message with the target's names and ids replaced by placeholders,
    so that answers about different resources compare."""
    message = str(error.get("message"))
    named = {
        "student": target.student,
        "course": target.course,
        "room": target.room,
        "device": target.device.device,
        "spare": target.spare,
    }
    for field, value in sorted(named.items(), key=lambda item: -len(item[1])):
        message = message.replace(value, f"<{field}>")
    return str(error.get("code")), re.sub(r"\b[0-9]+\b", "<id>", message)


async def test_scoping_matrix(central: conftest.Central, sites: tuple[Site, Site]) -> None:
    a, b = sites
    ghost = ghost_of(b)
    status, document = await central.request("GET", "/api/v1/openapi.json")
    assert status == 200
    operations = [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if operation["security"]  # public pages (check-in, /v/, keys) need no token
    ]
    assert len(operations) >= 35
    # Reads first, then writes, deletions last (a wrong deletion would hide later checks).
    operations.sort(key=lambda item: ["GET", "POST", "PUT", "PATCH", "DELETE"].index(item[0]))
    before = await dump(central)
    checked = 0
    for method, path, operation in operations:
        for role, secret in (("admin", a.admin), ("auditor", a.auditor), ("teacher", a.teacher)):
            ghosts = requests(path, operation, ghost)
            for n, (url, query, body, addressed) in enumerate(requests(path, operation, b)):
                status, text = await call(central, method, url, query, body, secret)
                what = f"{role} of A: {method} {url} {query} -> {status} {text[:200]}"
                assert status != 500, what
                if addressed:
                    assert status in (403, 404), what
                    # exactly what a resource that does not exist answers
                    url, query, body, _ = ghosts[n]
                    other, answer = await call(central, method, url, query, body, secret)
                    assert (other, placeholders(ghost, json.loads(answer)["error"])) == (
                        status,
                        placeholders(b, json.loads(text)["error"]),
                    ), f"{what}; nonexistent: {other} {answer[:200]}"
                elif query.get("site") == b.site or (isinstance(body, dict) and "site" in body):
                    assert status in (400, 403, 404), what
                for marker in b.markers:
                    assert marker not in text, f"{what}: shows site B's {marker!r}"
                if status == 404:
                    assert set(json.loads(text)) == {"error"}, what
                if method != "GET":
                    assert await dump(central) == before, f"{what}: changed the database"
                checked += 1
    assert await dump(central) == before
    assert checked > 100


# -- regression tests: each attack of the security test ------------------------------------
async def test_another_sites_admin_reads_nothing(
    central: conftest.Central, sites: tuple[Site, Site]
) -> None:
    """F1: site B's admin read A's rooms, devices, students, check-ins, evidence, exports,
    rosters, sessions, alerts, audit and tokens."""
    a, b = sites

    async def as_b(path: str) -> tuple[int, typing.Any]:
        return await central.request("GET", path, token=b.admin)

    for path in (
        f"/api/v1/rooms?site={a.site}",
        f"/api/v1/devices?site={a.site}",
        f"/api/v1/checkins?site={a.site}",
        f"/api/v1/sessions?site={a.site}",
        f"/api/v1/alerts?site={a.site}",
        f"/api/v1/courses?site={a.site}",
        f"/api/v1/proofs?site={a.site}&device={a.device.device}",
        f"/api/v1/students/{a.site}/{a.student}/attendance",
        f"/api/v1/students/{a.site}/{a.student}/export",
        f"/api/v1/checkins/{a.checkin}/evidence",
        f"/api/v1/courses/{a.site}/{a.course}/roster",
        f"/api/v1/courses/{a.site}/{a.course}/history",
        f"/api/v1/sessions/{a.session}/attendance?date={DATE}",
        f"/api/v1/devices/{a.site}/{a.device.device}/keys",
        f"/api/v1/exports/attendance.csv?site={a.site}&course={a.course}",
        f"/api/v1/exports/attendance.csv?site={a.site}&student_id={a.student}",
        f"/api/v1/exports/attendance.csv?session_id={a.session}&date={DATE}",
        f"/api/v1/webhooks/{a.webhook}/deliveries",
    ):
        status, body = await as_b(path)
        assert status == 404 and body["error"]["code"] == "not_found", (path, body)
    for path, key in (
        ("/api/v1/rooms", "rooms"),
        ("/api/v1/devices", "devices"),
        ("/api/v1/checkins", "checkins"),
        ("/api/v1/sessions", "sessions"),
        ("/api/v1/alerts", "alerts"),
        ("/api/v1/courses", "courses"),
        ("/api/v1/webhooks", "webhooks"),
        ("/api/v1/tokens", "tokens"),
    ):
        status, body = await as_b(path)
        assert status == 200 and body[key], (path, body)
        assert all(row["site"] == b.site for row in body[key]), (path, body)
    status, body = await central.request(
        "PATCH", f"/api/v1/rooms/{a.site}/{a.room}", {"radius_m": 70}, token=a.admin
    )
    assert status == 200
    status, body = await as_b("/api/v1/audit")
    assert status == 200 and all(entry["site"] == b.site for entry in body["audit"]), body
    status, body = await central.request("GET", "/api/v1/audit", token=a.admin)
    assert any(e["action"] == "room_geofence" for e in body["audit"]), body
    # the operator sees both sites
    status, body = await central.request("GET", "/api/v1/rooms", token=central.operator_token)
    assert {row["site"] for row in body["rooms"]} == {a.site, b.site}


async def test_another_sites_admin_changes_nothing(
    central: conftest.Central, sites: tuple[Site, Site]
) -> None:
    """F1: site B's admin reset A's student's PIN by CSV import (and checked in as them),
    erased A's student, sent a command to A's device and revoked A's admin token."""
    a, b = sites
    before = await dump(central)
    csv = f"site,student_id,pin\n{a.site},{a.student},135790\n"
    async with central.http.post(
        central.url + "/api/v1/imports/students",
        data=csv,
        headers={"Authorization": f"Bearer {b.admin}", "Content-Type": "text/csv"},
    ) as response:
        result = await response.json()
    assert response.status == 200 and not result["applied"], result
    assert [e["field"] for e in result["errors"]] == ["site"], result
    assert f"site {a.site} does not exist" in result["errors"][0]["message"]
    for method, path, body in (
        ("DELETE", f"/api/v1/students/{a.site}/{a.student}", None),
        ("POST", f"/api/v1/devices/{a.site}/{a.device.device}/commands", {"kind": "status_report"}),
        ("DELETE", f"/api/v1/tokens/{auth.token_hash(a.admin)[:12]}", None),
        ("DELETE", f"/api/v1/tokens/{auth.token_hash(central.operator_token)[:12]}", None),
        ("POST", f"/api/v1/alerts/{a.alert}/clear", None),
        ("DELETE", f"/api/v1/links/{a.link}", None),
        ("DELETE", f"/api/v1/webhooks/{a.webhook}", None),
        ("PUT", f"/api/v1/courses/{a.site}/{a.course}/roster", {"students": []}),
        ("POST", "/api/v1/courses", {"site": a.site, "course": "evil"}),
    ):
        status, answer = await central.request(method, path, body, token=b.admin)
        assert status == 404 and answer["error"]["code"] == "not_found", (path, answer)
    assert await dump(central) == before
    assert (await central.request("GET", "/api/v1/rooms", token=a.admin))[0] == 200


async def test_another_sites_checkins_reach_neither_its_webhook_nor_its_stream(
    central: conftest.Central, sites: tuple[Site, Site]
) -> None:
    """F1: site B received site A's check-ins through its own webhook and event stream."""
    a, b = sites
    await central.db.add_webhook("http://127.0.0.1:9/a", ("checkin",), "a", "whsec_a", 1, a.site)
    await central.db.add_webhook("http://127.0.0.1:9/b", ("checkin",), "b", "whsec_b", 1, b.site)
    hooks = {h.site: h.id for h in await central.db.list_webhooks() if h.events == ("checkin",)}

    async def queued(hook: int, checkin_id: int) -> bool:
        rows = await central.db.list_webhook_deliveries(hook, 100, 0)
        return any(row.event_id == f"evt_checkin_{checkin_id}" for row in rows)

    for n in range(20):  # until the dispatcher has loaded the new subscriptions
        await central.db.add_student(a.site, f"warm-{n}", students.hash_pin(PIN))
        warm = await checkin(central, a.device, f"warm-{n}")
        with contextlib.suppress(AssertionError):
            await conftest.poll(
                functools.partial(queued, hooks[a.site], warm), 1, "a first delivery"
            )
            break
    headers = {"Authorization": f"Bearer {b.admin}"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with central.http.get(
        central.url + "/api/v1/events", headers=headers, timeout=timeout
    ) as stream:
        assert (await stream.content.readline()).startswith(b": connected")
        await central.db.add_student(a.site, "st-late", students.hash_pin(PIN))
        theirs = await checkin(central, a.device, "st-late")
        await central.db.add_student(b.site, "st-late", students.hash_pin(PIN))
        mine = await checkin(central, b.device, "st-late")
        seen: list[dict[str, typing.Any]] = []
        while not any(e.get("id") == mine for e in seen):
            line = await asyncio.wait_for(stream.content.readline(), 10)
            if line.startswith(b"data: "):
                seen.append(json.loads(line[6:]))
    assert all(event.get("site") == b.site for event in seen), seen
    assert not any(event.get("id") == theirs for event in seen)

    await conftest.poll(lambda: queued(hooks[b.site], mine), 15, "B's check-in for B's webhook")
    await conftest.poll(lambda: queued(hooks[a.site], theirs), 15, "A's check-in for A's webhook")
    b_events = [r.event_id for r in await central.db.list_webhook_deliveries(hooks[b.site], 100, 0)]
    a_events = [r.event_id for r in await central.db.list_webhook_deliveries(hooks[a.site], 100, 0)]
    assert f"evt_checkin_{theirs}" not in b_events and f"evt_checkin_{theirs}" in a_events


async def test_teacher_revokes_only_links_in_their_courses(
    central: conftest.Central, sites: tuple[Site, Site]
) -> None:
    """F6: a teacher revoked the verification link of a check-in in another site's course."""
    a, b = sites
    status, body = await central.request("DELETE", f"/api/v1/links/{b.link}", token=a.teacher)
    assert status == 404 and body["error"]["code"] == "not_found", body
    # the same site, but a check-in in none of the teacher's courses' sessions
    status, body = await central.request("DELETE", f"/api/v1/links/{a.link}", token=a.teacher)
    assert status == 403 and body["error"]["code"] == "not_your_course", body
    for link in (a.link, b.link):
        found = await central.db.get_link(link)
        assert found is not None and found.revoked_at is None
    status, _ = await central.request("DELETE", f"/api/v1/links/{a.link}", token=a.admin)
    assert status == 200


async def test_tokens_list_and_revocation_stay_in_their_site(
    central: conftest.Central, sites: tuple[Site, Site]
) -> None:
    a, b = sites
    status, body = await central.request("GET", "/api/v1/tokens", token=b.admin)
    assert status == 200 and {t["site"] for t in body["tokens"]} == {b.site}
    status, body = await central.request("GET", "/api/v1/tokens", token=central.operator_token)
    sites_listed = {t["site"] for t in body["tokens"]}
    assert sites_listed == {a.site, b.site, None}
    operator_id = auth.token_hash(central.operator_token)[:12]
    status, _ = await central.request("DELETE", f"/api/v1/tokens/{operator_id}", token=a.admin)
    assert status == 404
    status, _ = await central.request("DELETE", f"/api/v1/tokens/{a.spare}", token=a.admin)
    assert status == 200
    # a site-less admin token from before sites were sealed acts nowhere
    legacy = await token(central, "admin", None, "legacy")
    assert (await central.request("GET", "/api/v1/rooms", token=legacy))[0] == 401


# -- the command line ------------------------------------------------------------------------
def cli(config: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "central", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture()
def two_sites(tmp_path: pathlib.Path) -> pathlib.Path:
    """A central configuration with sites `north` (course law) and `south` (course art)."""
    config = tmp_path / "central.toml"
    port = broker_mod.free_port()
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\npublic_url = "http://127.0.0.1:{port}"\n'
        f'http_host = "127.0.0.1"\nhttp_port = {port}\nmqtt_url = "mqtt://127.0.0.1:9"\n'
    )
    for site in ("north", "south"):
        assert cli(config, "site", "add", "--site", site).returncode == 0
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "central.db")) as raw:
        raw.execute("INSERT INTO courses VALUES ('north', 'law', 'Law', 'UTC')")
        raw.execute("INSERT INTO courses VALUES ('south', 'art', 'Art', 'UTC')")
        raw.commit()
    return config


def test_token_create_names_a_site_or_all_sites(two_sites: pathlib.Path) -> None:
    config = two_sites
    made = cli(config, "token", "create", "--role", "admin", "--site", "north", "--name", "it-n")
    assert made.returncode == 0 and made.stdout.startswith("rp_"), made.stderr
    assert "admin token for north" in made.stderr
    for args, error in (
        (("--role", "admin"), "one of the arguments --site --all-sites is required"),
        (("--role", "admin", "--all-sites"), "a admin token acts in one site: give --site"),
        (("--role", "operator", "--site", "north"), "operator token spans every site"),
        (("--role", "auditor", "--site", "east"), "site east does not exist"),
        (("--role", "teacher", "--site", "north"), "needs at least one --course"),
        (("--role", "teacher", "--site", "north", "--course", "south/art"), "of --site north"),
        (("--role", "teacher", "--site", "north", "--course", "art"), "north/art does not exist"),
        (("--role", "auditor", "--site", "north", "--course", "law"), "teacher tokens only"),
    ):
        refused = cli(config, "token", "create", *args)
        assert refused.returncode != 0 and error in refused.stderr, (args, refused.stderr)
    for course in ("law", "north/law"):
        made = cli(
            config, "token", "create", "--role", "teacher", "--site", "north", "--course", course
        )
        assert made.returncode == 0, made.stderr
    made = cli(config, "token", "create", "--role", "operator", "--all-sites", "--name", "noc")
    assert made.returncode == 0, made.stderr
    listed = cli(config, "token", "list").stdout.splitlines()
    rows = {(line.split()[1], line.split()[2]) for line in listed}
    assert rows == {("admin", "north"), ("teacher", "north"), ("operator", "(all")}, listed
    assert any("[north/law]" in line for line in listed)


def test_unscoped_tokens_stop_the_start_until_migrated(two_sites: pathlib.Path) -> None:
    """Tokens from before sites were sealed: with several sites central refuses to start
    with one line naming `central token migrate`, which then assigns them."""
    config = two_sites
    db_path = config.parent / "data" / "central.db"
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        for hash_, role in (("a" * 64, "admin"), ("b" * 64, "auditor"), ("c" * 64, "admin")):
            raw.execute(
                "INSERT INTO admin_tokens (hash, role, name, created_at) VALUES (?, ?, ?, 1)",
                (hash_, role, f"old {role}"),
            )
        raw.commit()
    refused = cli(config, "serve")
    assert refused.returncode == 1, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: 3 admin token(s) have no site") and "token migrate" in line
    listed = cli(config, "token", "migrate")
    assert listed.returncode == 0 and listed.stdout.count("old ") == 3, listed
    assert "(none: migrate)" in cli(config, "token", "list").stdout
    wrong = cli(config, "token", "migrate", "--operator")
    assert wrong.returncode == 1 and "bbbbbbbbbbbb is a auditor's" in wrong.stderr
    done = cli(config, "token", "migrate", "--operator", "--id", "a" * 12)
    assert done.returncode == 0 and "aaaaaaaaaaaa: operator of all sites" in done.stdout
    done = cli(config, "token", "migrate", "--site", "south")
    assert done.returncode == 0 and done.stdout.count("of south") == 2, done
    assert "nothing to migrate" in cli(config, "token", "migrate").stdout
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        rows = sorted(raw.execute("SELECT substr(hash, 1, 1), role, site FROM admin_tokens"))
        actions = [row[0] for row in raw.execute("SELECT action FROM audit_log")]
    assert rows == [("a", "operator", None), ("b", "auditor", "south"), ("c", "admin", "south")]
    assert actions.count("token_migrate") == 3
