"""Outbound webhooks against a real aiohttp receiver on a free port: a check-in is delivered
after a 500 and a timeout, signed so the receiver can verify it (and a tampered body cannot);
session_closed fires once when central's clock passes the end; a pending delivery survives a
restart of central; only admins manage webhooks. The store part runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import datetime
import hashlib
import hmac
import json
import pathlib
import typing
import uuid
import zoneinfo

import pytest
from aiohttp import test_utils
from aiohttp import web

from central import app as app_mod
from central.core import clock as clock_mod
from central.core import settings as settings_mod
from central.domain import timetable
from central.http import auth
from central.http import webhooks
from central.storage import database
from central.storage import store
from central.storage import stores
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from tests import broker as broker_mod
from tests.central import conftest
from tests.stores import pg

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
MONDAY = datetime.date(2027, 3, 22)


def local(hhmm: str, day: datetime.date = MONDAY) -> int:
    moment = datetime.datetime.combine(day, datetime.time.fromisoformat(hhmm), tzinfo=BERLIN)
    return int(moment.timestamp() * 1000)


FAST = {
    "webhook_backoff_s": 1,
    "webhook_backoff_max_s": 4,
    "webhook_timeout_s": 0.5,
    "webhook_poll_s": 0.05,
    "webhook_max_attempts": 4,
    # The receivers here listen on loopback, which webhooks reach only when allowed (F5).
    "webhook_allow_networks": ["127.0.0.1/32"],
}


@pytest.fixture()
def clock() -> clock_mod.SettableClock:
    return clock_mod.SettableClock(local("08:00"))


@pytest.fixture()
def central_overrides() -> dict[str, typing.Any]:
    return dict(FAST)


class Receiver:
    """A CRM's webhook endpoint: answers each request as scripted (a status, "hang" past
    central's timeout, or "block" until released), then 200; keeps every request it saw."""

    def __init__(self) -> None:
        self.script: list[int | str] = []
        self.release = asyncio.Event()
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.port = broker_mod.free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/roomproof"

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((dict(request.headers), await request.read()))
        step = self.script.pop(0) if self.script else 200
        if step == "hang":
            await asyncio.sleep(1.5)
            step = 200
        elif step == "block":
            await self.release.wait()
            step = 200
        return web.json_response({"ok": step == 200}, status=int(step))

    def bodies(self) -> list[dict[str, typing.Any]]:
        return [json.loads(body) for _, body in self.seen]


@contextlib.asynccontextmanager
async def serve_receiver() -> collections.abc.AsyncIterator[Receiver]:
    handle = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/roomproof", handle.handle)
    server = test_utils.TestServer(app, host="127.0.0.1", port=handle.port)
    await server.start_server()
    try:
        yield handle
    finally:
        handle.release.set()
        await server.close()


@pytest.fixture()
async def receiver() -> collections.abc.AsyncIterator[Receiver]:
    async with serve_receiver() as handle:
        yield handle


def receiver_verifies(secret: str, headers: dict[str, str], body: bytes, now_s: int) -> bool:
    """The receiver's check, written from docs/attendance.md rather than with central's code."""
    fields = dict(item.split("=", 1) for item in headers["Roomproof-Signature"].split(","))
    if abs(now_s - int(fields["t"])) > 300:
        return False
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), fields["v1"])


async def add_webhook(central: conftest.Central, url: str, events: list[str]) -> tuple[int, str]:
    status, body = await central.request(
        "POST",
        "/api/v1/webhooks",
        {"url": url, "events": events, "description": "LMS"},
        token=central.admin_token,
    )
    assert status == 201, body
    return body["webhook"]["id"], body["secret"]


async def deliveries(central: conftest.Central, webhook_id: int) -> list[dict[str, typing.Any]]:
    status, body = await central.request(
        "GET", f"/api/v1/webhooks/{webhook_id}/deliveries", token=central.admin_token
    )
    assert status == 200, body
    return typing.cast(list[dict[str, typing.Any]], body["deliveries"])


class Room:
    """The central fixture's room with an enrolled scripted device whose proofs follow the
    settable clock, so that check-ins happen at the clock's time."""

    def __init__(
        self,
        central: conftest.Central,
        clock: clock_mod.SettableClock,
        device: conftest.ScriptedDevice,
    ) -> None:
        self.central = central
        self.clock = clock
        self.device = device

    async def at(self, when: int) -> None:
        self.clock.set(when)
        await self.central.publish(self.device.topic("proof"), self.device.next_proof(iat_ms=when))
        seq = self.device.seq

        async def stored() -> bool:
            row = await self.central.db.get_device(self.central.site, self.device.device)
            return row is not None and row.last_seq == seq

        await conftest.poll(stored, 10, f"proof {seq}")

    async def check_in(self, student: str) -> dict[str, typing.Any]:
        slot = slots.slot_of(self.clock.now_ms(), conftest.SLOT_S)
        token = qrtoken.url(
            self.central.url, self.device.site, self.device.device, slot, self.device.token(slot)
        )
        self.central.new_phone()
        status, body = await self.central.request(
            "POST", "/api/v1/checkins", {"token": token, "student_id": student, "pin": "2468"}
        )
        assert status == 201, body
        return typing.cast(dict[str, typing.Any], body["checkin"])


@pytest.fixture()
async def room(central: conftest.Central, clock: clock_mod.SettableClock) -> Room:
    device, code = await central.add_device("pi-hooks", now_ms=clock.now_ms())
    await central.enroll(device, code)
    for student in ("s1", "s2"):
        await central.add_student(student, "2468")
    handle = Room(central, clock, device)
    await handle.at(clock.now_ms())
    return handle


async def test_checkin_is_retried_signed_and_logged(room: Room, receiver: Receiver) -> None:
    central, clock = room.central, room.clock
    webhook_id, secret = await add_webhook(central, receiver.url, ["checkin"])
    assert secret.startswith("whsec_")
    status, listed = await central.request("GET", "/api/v1/webhooks", token=central.admin_token)
    assert status == 200 and [w["id"] for w in listed["webhooks"]] == [webhook_id]
    assert "secret" not in json.dumps(listed)
    receiver.script = [500, "hang"]

    checkin = await room.check_in("s1")

    async def attempts(count: int) -> dict[str, typing.Any] | None:
        rows = await deliveries(central, webhook_id)
        return rows[0] if rows and rows[0]["attempts"] == count else None

    first = await conftest.poll(lambda: attempts(1), 10, "the first attempt")
    assert first["state"] == "pending" and first["last_status"] == 500
    assert first["last_error"] == "HTTP 500" and first["next_attempt_at"] is not None
    await asyncio.sleep(0.3)  # central's clock stands still: no retry before it is due
    assert len(receiver.seen) == 1
    clock.advance(4_000)  # past the longest first backoff (1 s doubled, jittered, capped)
    second = await conftest.poll(lambda: attempts(2), 10, "the retry that times out")
    assert second["state"] == "pending" and second["last_status"] is None
    assert "timeout" in second["last_error"]
    clock.advance(8_000)
    third = await conftest.poll(lambda: attempts(3), 10, "the third, accepted attempt")
    assert third["state"] == "delivered" and third["last_status"] == 200
    assert third["delivered_at"] is not None and third["next_attempt_at"] is None
    assert third["event_id"] == f"evt_checkin_{checkin['id']}"

    assert len(receiver.seen) == 3
    bodies = receiver.bodies()
    assert all(body == bodies[0] for body in bodies)  # the same event every time
    event = bodies[0]
    assert event["id"] == third["event_id"] and event["type"] == "checkin"
    assert event["data"]["id"] == checkin["id"] and event["data"]["student_id"] == "s1"
    assert "evidence" not in event["data"]
    now_s = clock.now_ms() // 1000
    for headers, body in receiver.seen:
        assert headers["Roomproof-Event-Id"] == event["id"]
        assert headers["Content-Type"] == "application/json"
        assert receiver_verifies(secret, headers, body, now_s)
        tampered = body.replace(b'"s1"', b'"s2"')
        assert tampered != body and not receiver_verifies(secret, headers, tampered, now_s)
        assert not receiver_verifies("whsec_wrong", headers, body, now_s)
        assert not receiver_verifies(secret, headers, body, now_s + 3600)  # a replay, later
        assert webhooks.verify(secret, headers["Roomproof-Signature"], body, now_s)


async def test_session_closed_fires_once(room: Room, receiver: Receiver) -> None:
    central, clock = room.central, room.clock
    webhook_id, secret = await add_webhook(central, receiver.url, ["session_closed"])
    await central.db.add_course(store.Course(central.site, "math", "Maths", "Europe/Berlin"))
    await central.db.set_roster(central.site, "math", ["s1", "s2"])
    session = await central.db.add_session(
        timetable.Session(
            0,
            central.site,
            "math",
            central.room,
            "Europe/Berlin",
            MONDAY,
            datetime.time(8, 0),
            datetime.time(9, 0),
            True,
            None,
            5,
            False,
        )
    )
    await room.at(local("08:02"))
    await room.check_in("s1")

    async def looked_at(now_ms: int) -> bool:
        return await central.db.webhook_cursor(webhooks.SESSION_CURSOR) == now_ms

    await room.at(local("08:59"))
    await conftest.poll(lambda: looked_at(local("08:59")), 10, "a look before the end")
    assert await deliveries(central, webhook_id) == []
    clock.set(local("09:00"))

    async def delivered() -> bool:
        rows = await deliveries(central, webhook_id)
        return bool(rows) and rows[0]["state"] == "delivered"

    await conftest.poll(delivered, 10, "session_closed to be delivered")
    clock.set(local("09:45"))
    await conftest.poll(lambda: looked_at(local("09:45")), 10, "a later look")
    clock.set(local("09:00", MONDAY + datetime.timedelta(days=7)) - 1)  # before next week's end
    await conftest.poll(lambda: looked_at(clock.now_ms()), 10, "a look just before next week's end")
    assert len(await deliveries(central, webhook_id)) == 1 and len(receiver.seen) == 1
    headers, raw = receiver.seen[0]
    assert receiver_verifies(secret, headers, raw, local("09:00") // 1000)  # sent then
    event = json.loads(raw)
    assert event["id"] == f"evt_session_closed_{session.id}_2027-03-22"
    assert event["type"] == "session_closed" and event["created_at"].startswith("2027-03-22T08:00")
    data = event["data"]
    assert data["site"] == central.site and data["occurrence"]["session_id"] == session.id
    assert data["summary"]["present"] == 1 and data["summary"]["absent"] == 1
    assert {row["student_id"]: row["status"] for row in data["attendance"]} == {
        "s1": "present",
        "s2": "absent",
    }


async def test_only_admins_manage_webhooks(central: conftest.Central) -> None:
    tokens = {}
    for role in ("teacher", "auditor"):
        tokens[role] = auth.new_token()
        await central.db.add_admin_token(
            auth.token_hash(tokens[role]), role, role, 0, site=central.site
        )
    body = {"url": "https://crm.example/hook", "events": ["checkin"]}
    for role, token in tokens.items():
        status, reply = await central.request("POST", "/api/v1/webhooks", body, token=token)
        assert status == 403 and reply["error"]["code"] == "forbidden", role
    status, reply = await central.request("POST", "/api/v1/webhooks", body)
    assert status == 401
    status, reply = await central.request(
        "POST", "/api/v1/webhooks", body, token=central.admin_token
    )
    assert status == 201
    webhook_id = reply["webhook"]["id"]
    for method, path in (
        ("GET", "/api/v1/webhooks"),
        ("GET", f"/api/v1/webhooks/{webhook_id}/deliveries"),
        ("DELETE", f"/api/v1/webhooks/{webhook_id}"),
    ):
        status, reply = await central.request(method, path, token=tokens["teacher"])
        assert status == 403, (method, path)
    status, _ = await central.request("GET", "/api/v1/webhooks", token=tokens["auditor"])
    assert status == 200  # auditors read the list and the delivery log
    status, _ = await central.request(
        "DELETE", f"/api/v1/webhooks/{webhook_id}", token=tokens["auditor"]
    )
    assert status == 403

    bad = [
        ({"url": "ftp://crm.example/x", "events": ["checkin"]}, "url"),
        ({"url": "https://user:pw@crm.example/x", "events": ["checkin"]}, "url"),
        ({"url": "https:///nohost", "events": ["checkin"]}, "url"),
        ({"url": "https://crm.example/a b", "events": ["checkin"]}, "url"),
        ({"url": 5, "events": ["checkin"]}, "url"),
        ({"url": "https://crm.example/x", "events": []}, "events"),
        ({"url": "https://crm.example/x", "events": ["deleted"]}, "events"),
        ({"url": "https://crm.example/x", "events": ["checkin", "checkin"]}, "events"),
        ({"url": "https://crm.example/x", "events": ["checkin"], "description": "a\x00"}, None),
        ({"url": "https://crm.example/x", "events": ["checkin"], "secret": "mine"}, None),
    ]
    for payload, field in bad:
        status, reply = await central.request(
            "POST", "/api/v1/webhooks", payload, token=central.admin_token
        )
        assert status == 400, payload
        assert reply["error"]["code"] == "invalid_request"
        if field:
            assert reply["error"]["details"]["field"] == field
    status, reply = await central.request(
        "DELETE", "/api/v1/webhooks/999999", token=central.admin_token
    )
    assert status == 404 and reply["error"]["code"] == "not_found"
    status, reply = await central.request(
        "DELETE", f"/api/v1/webhooks/{webhook_id}", token=central.admin_token
    )
    assert status == 200 and reply == {"deleted": webhook_id}
    status, reply = await central.request(
        "GET", f"/api/v1/webhooks/{webhook_id}/deliveries", token=central.admin_token
    )
    assert status == 404
    _, log = await central.request("GET", "/api/v1/audit", token=central.admin_token)
    actions = [(e["action"], e["target"]) for e in log["audit"]]
    assert ("webhook_add", str(webhook_id)) in actions
    assert ("webhook_delete", str(webhook_id)) in actions


# -- both stores --------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest) -> collections.abc.AsyncIterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    async with pg.fresh_database() as dsn:
        yield dsn


def _open(database_url: str | None, path: pathlib.Path) -> database.Database:
    if database_url is None:
        return database.Database.sqlite(path / "central.db")
    return database.Database.postgres(database_url)


async def test_store_deliveries(database_url: str | None, tmp_path: pathlib.Path) -> None:
    db = _open(database_url, tmp_path)
    await db.open()
    try:
        both = await db.add_webhook("https://a.example/", ("checkin", "session_closed"), "", "k", 1)
        closes = await db.add_webhook("https://b.example/", ("session_closed",), "d", "k2", 2)
        assert [w.events for w in await db.list_webhooks()] == [
            ("checkin", "session_closed"),
            ("session_closed",),
        ]
        assert await db.enqueue_webhook_event("e1", "checkin", "{}", 10) == 1
        assert await db.enqueue_webhook_event("e1", "checkin", "{}", 11) == 0  # once
        assert await db.enqueue_webhook_event("e2", "session_closed", '{"x":1}', 20) == 2
        assert await db.webhooks_due(15) == [both.id]
        assert await db.webhooks_due(20) == [both.id, closes.id]
        due = await db.due_webhook_deliveries(both.id, 20, 10)
        assert [(d.event_id, d.next_attempt_at, d.attempts) for d in due] == [
            ("e1", 10, 0),
            ("e2", 20, 0),
        ]
        assert await db.claim_webhook_delivery(due[0].id, 10, 500)
        assert not await db.claim_webhook_delivery(due[0].id, 10, 600)  # taken already
        await db.record_webhook_attempt(due[0].id, 503, "HTTP 503", 100, None)
        await db.record_webhook_attempt(due[1].id, 200, None, None, 30)
        rows = await db.list_webhook_deliveries(both.id, 10, 0)
        assert [(r.attempts, r.last_status, r.next_attempt_at, r.delivered_at) for r in rows] == [
            (1, 503, 100, None),
            (1, 200, None, 30),
        ]
        assert [r.id for r in await db.list_webhook_deliveries(both.id, 1, rows[0].id)] == [
            rows[1].id
        ]
        assert await db.purge_webhook_deliveries(21) == 1  # the delivered one; pending stays
        assert [r.id for r in await db.list_webhook_deliveries(both.id, 10, 0)] == [rows[0].id]
        assert await db.webhook_cursor("c") is None
        await db.set_webhook_cursor("c", 5)
        await db.set_webhook_cursor("c", 7)
        assert await db.webhook_cursor("c") == 7
        assert await db.delete_webhook(both.id)
        assert not await db.delete_webhook(both.id)
        assert await db.list_webhook_deliveries(both.id, 10, 0) == []
        assert await db.webhooks_due(1000) == [closes.id]
    finally:
        await db.close()


class Standalone:
    """Central without a broker link on its own store (SQLite or PostgreSQL), started and
    stopped by the test; the store has a site, a room, a course and an admin token."""

    def __init__(
        self,
        tmp_path: pathlib.Path,
        database_url: str | None,
        clock: clock_mod.SettableClock,
        **overrides: typing.Any,
    ) -> None:
        self.settings = settings_mod.CentralSettings(
            data_dir=tmp_path / "central",
            database_url=database_url,
            mqtt_client_id=f"c-{uuid.uuid4().hex[:8]}",
            **{**FAST, **overrides},
        )
        self.settings.data_dir.mkdir()
        self.clock = clock
        self.db = stores.make(self.settings)
        self.site = f"s{uuid.uuid4().hex[:8]}"
        self.token = auth.new_token()
        self.client: test_utils.TestClient | None = None

    async def prepare(self) -> None:
        await self.db.open()
        await self.db.add_site(self.site, "campus")
        await self.db.add_room(self.site, "r1", "Room 1", None, None, 50)
        await self.db.add_course(store.Course(self.site, "bio", "Biology", "Europe/Berlin"))
        await self.db.add_admin_token(
            auth.token_hash(self.token), "admin", "tests", 0, site=self.site
        )

    async def start(self) -> None:
        app = app_mod.build(self.settings, with_bridge=False, clock=self.clock)
        server = test_utils.TestServer(app, host="127.0.0.1", port=broker_mod.free_port())
        self.client = test_utils.TestClient(server)
        await self.client.start_server()
        # The dispatcher's first look sets its cursor: sessions end after it.
        await conftest.poll(self.looked, 10, "the dispatcher's first look")

    async def looked(self) -> bool:
        return await self.db.webhook_cursor(webhooks.SESSION_CURSOR) == self.clock.now_ms()

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def add_webhook(self, url: str) -> int:
        assert self.client is not None
        async with self.client.post(
            "/api/v1/webhooks",
            json={"url": url, "events": ["session_closed"]},
            headers={"Authorization": f"Bearer {self.token}"},
        ) as response:
            assert response.status == 201
            return int((await response.json())["webhook"]["id"])

    async def add_session(self, start: str, end: str) -> timetable.Session:
        return await self.db.add_session(
            timetable.Session(
                0,
                self.site,
                "bio",
                "r1",
                "Europe/Berlin",
                MONDAY,
                datetime.time.fromisoformat(start),
                datetime.time.fromisoformat(end),
                False,
                None,
                5,
                False,
            )
        )

    async def log(self, webhook_id: int) -> list[store.WebhookDelivery]:
        return await self.db.list_webhook_deliveries(webhook_id, 10, 0)


@pytest.fixture()
async def standalone(
    database_url: str | None, tmp_path: pathlib.Path, clock: clock_mod.SettableClock
) -> collections.abc.AsyncIterator[Standalone]:
    handle = Standalone(tmp_path, database_url, clock, webhook_timeout_s=30)
    await handle.prepare()
    yield handle
    await handle.stop()
    await handle.db.close()


async def test_pending_delivery_survives_a_restart(
    standalone: Standalone, receiver: Receiver, clock: clock_mod.SettableClock
) -> None:
    """Central is stopped after a failed attempt; the next central on the same store sends
    the delivery when it is due."""
    receiver.script = [503]
    await standalone.start()
    webhook_id = await standalone.add_webhook(receiver.url)
    await standalone.add_session("08:00", "08:30")
    clock.set(local("08:31"))

    async def failed_once() -> bool:
        rows = await standalone.log(webhook_id)
        return bool(rows) and rows[0].attempts == 1

    await conftest.poll(failed_once, 10, "the first, refused attempt")
    await standalone.stop()  # central stops with the delivery pending
    assert receiver.bodies()[0]["type"] == "session_closed"
    pending = (await standalone.log(webhook_id))[0]
    assert pending.next_attempt_at is not None and pending.delivered_at is None
    assert pending.last_status == 503

    await standalone.start()
    clock.advance(5_000)

    async def delivered() -> bool:
        return (await standalone.log(webhook_id))[0].delivered_at is not None

    await conftest.poll(delivered, 10, "the resumed delivery")
    done = (await standalone.log(webhook_id))[0]
    assert done.attempts == 2 and done.last_status == 200
    assert len(receiver.seen) == 2 and receiver.seen[0][1] == receiver.seen[1][1]


async def test_a_stalled_receiver_delays_only_its_own_events(
    standalone: Standalone, receiver: Receiver
) -> None:
    """One endpoint holds its first request open (within the 30 s timeout); the other
    webhook's deliveries go through meanwhile, and the stalled one completes once released."""
    receiver.script = ["block"]
    async with serve_receiver() as healthy:
        await standalone.start()
        stalled_id = await standalone.add_webhook(receiver.url)
        healthy_id = await standalone.add_webhook(healthy.url)
        await standalone.add_session("08:00", "08:30")
        await standalone.add_session("09:00", "09:30")
        standalone.clock.set(local("09:31"))

        async def delivered(webhook_id: int, count: int) -> bool:
            rows = await standalone.log(webhook_id)
            return sum(r.delivered_at is not None for r in rows) == count

        await conftest.poll(lambda: delivered(healthy_id, 2), 10, "the healthy endpoint's two")
        assert len(receiver.seen) == 1  # the stalled endpoint still holds its first event
        assert [r.attempts for r in await standalone.log(stalled_id)] == [0, 0]
        receiver.release.set()
        await conftest.poll(lambda: delivered(stalled_id, 2), 10, "the stalled endpoint's two")
        assert len(healthy.seen) == 2 and len(receiver.seen) == 2
