"""Central in-process on a real port and the session's Mosquitto, plus a scripted device.

The scripted device speaks protocol v1 with the same functions the agent uses
(edge_agent.protocol); it lets a test send exactly the proofs and bad input it wants.
"""

from __future__ import annotations

import asyncio
import collections.abc
import dataclasses
import json
import os
import pathlib
import time
import typing
import uuid

import aiohttp
import aiomqtt
import pytest
import yarl
from aiohttp import test_utils

from central import app as app_mod
from central.checkin import students
from central.core import clock as clock_mod
from central.core import settings as settings_mod
from central.http import auth
from central.storage import database
from central.storage import stores
from edge_agent.protocol import b64
from edge_agent.protocol import chain
from edge_agent.protocol import enroll
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken
from edge_agent.protocol import report
from edge_agent.protocol import slots
from edge_agent.protocol import topics
from tests import broker as broker_mod

SLOT_S = 20


async def poll(
    check: typing.Callable[[], typing.Awaitable[typing.Any]], within_s: float, what: str
) -> typing.Any:
    deadline = time.monotonic() + within_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclasses.dataclass
class ScriptedDevice:
    site: str
    room: str
    device: str
    signing: keys.SigningKey = dataclasses.field(default_factory=keys.SigningKey.generate)
    agreement: keys.AgreementKey = dataclasses.field(default_factory=keys.AgreementKey.generate)
    seq: int = 0
    prev: str = chain.GENESIS
    sent: list[str] = dataclasses.field(default_factory=list)

    def topic(self, kind: str) -> str:
        return topics.topic(self.site, self.device, kind)

    def token(self, slot: int, key: keys.SigningKey | None = None) -> bytes:
        return qrtoken.sign(key or self.signing, self.site, self.device, self.room, slot)

    def next_proof(self, iat_ms: int | None = None, **overrides: typing.Any) -> str:
        iat = int(time.time() * 1000) if iat_ms is None else iat_ms
        slot = slots.slot_of(iat, SLOT_S)
        claims = {
            "site": self.site,
            "room": self.room,
            "device": self.device,
            "seq": self.seq + 1,
            "boot": "0123456789abcdef",
            "iat": iat,
            "clock": {"source": "ntp", "uncertainty_ms": 10},
            "slot": slot,
            "slot_s": SLOT_S,
            "otp_step_s": 30,
            "qr": b64.encode(self.token(slot)),
            "prev": self.prev,
            "env": {},
        }
        claims.update(overrides)
        compact = proof.sign(proof.Claims.model_validate(claims), self.signing)
        self.seq += 1
        self.prev = chain.link(compact)
        self.sent.append(compact)
        return compact

    def report(self, model: type[report.Report], **claims: typing.Any) -> bytes:
        """A signed status, telemetry or command result, as the agent sends it."""
        fields = {"site": self.site, "device": self.device, "boot": "0123456789abcdef"}
        fields["iat"] = int(time.time() * 1000)
        return report.sign(model.model_validate({**fields, **claims}), self.signing)


@dataclasses.dataclass
class Central:
    url: str
    settings: settings_mod.CentralSettings
    db: database.Database  # a second handle on central's store (SQLite, or PostgreSQL when set)
    mqtt: aiomqtt.Client
    http: aiohttp.ClientSession
    admin_token: str
    site: str
    room: str
    operator_token: str = ""  # spans every site (the admin_token is the site's admin)

    async def request(
        self,
        method: str,
        path: str,
        body: typing.Any = None,
        token: str | None = None,
        **kwargs: typing.Any,
    ) -> tuple[int, typing.Any]:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(
            method, self.url + path, json=body, headers=headers, **kwargs
        ) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    def new_phone(self) -> None:
        """`http` becomes another phone that opened the check-in page: no student cookie, a
        browser id of its own (the page sets one; without it a check-in is flagged
        `no_browser_id`)."""
        self.http.cookie_jar.clear()
        self.http.cookie_jar.update_cookies(
            {"roomproof_browser": b64.encode(os.urandom(18))}, yarl.URL(self.url)
        )

    async def add_student(self, student_id: str, pin: str) -> None:
        await self.db.add_student(self.site, student_id, students.hash_pin(pin))

    async def add_device(self, name: str, now_ms: int | None = None) -> tuple[ScriptedDevice, str]:
        code = b64.encode(os.urandom(32))
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        await self.db.add_device(self.site, self.room, name, code, now_ms + 3600_000)
        return ScriptedDevice(self.site, self.room, name), code

    async def enroll(
        self, device: ScriptedDevice, code: str, signed: bool = True
    ) -> dict[str, typing.Any]:
        """Enroll over MQTT exactly like an agent (or, not `signed`, like an agent older than
        signed enrollment requests) and return central's verified reply."""
        central_public = b64.decode((await self.request("GET", "/api/v1/keys"))[1]["ed25519"])
        async with aiomqtt.Client(
            "127.0.0.1",
            self.settings.mqtt_host_port()[1],
            identifier=f"dev-{uuid.uuid4().hex}",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:
            await client.subscribe(device.topic("cmd"), qos=1)
            if signed:
                request = enroll.sign_request(
                    code,
                    device.site,
                    device.room,
                    device.device,
                    device.signing,
                    device.agreement.public,
                )
            else:
                request = enroll.make_request(
                    code,
                    device.site,
                    device.room,
                    device.device,
                    device.signing.public,
                    device.agreement.public,
                )
            await client.publish(device.topic("enroll"), request, qos=1)
            async with asyncio.timeout(10):
                async for message in client.messages:
                    return enroll.verify_reply(typing.cast(bytes, message.payload), central_public)
        raise AssertionError("no enrollment reply")

    async def publish(self, topic: str, payload: bytes | str) -> None:
        await self.mqtt.publish(topic, payload, qos=1)

    async def stored_seqs(self, device: str) -> list[int]:
        return sorted(row.seq for row in await self.db.list_proofs(self.site, device, 1000))

    async def rejections(self) -> dict[str, int]:
        counts, _ = await self.db.rejections()
        return counts


@pytest.fixture()
def clock() -> clock_mod.Clock | None:
    """Central's clock; a test module overrides this fixture to walk time step by step."""
    return None


@pytest.fixture()
def central_overrides() -> dict[str, typing.Any]:
    """Extra central settings; a test module overrides this fixture to change them."""
    return {}


def settings_for(
    tmp_path: pathlib.Path,
    broker: broker_mod.Broker,
    port: int,
    unique: str,
    **overrides: typing.Any,
) -> settings_mod.CentralSettings:
    """A test central's settings: its own data dir, port, MQTT client id and share group, on
    the test session's (anonymous) broker."""
    return settings_mod.CentralSettings(
        data_dir=tmp_path / "central",
        http_host="127.0.0.1",
        http_port=port,
        public_url=f"http://127.0.0.1:{port}",
        mqtt_url=broker.url,
        mqtt_client_id=f"central-{unique}",
        mqtt_share_group=f"g{unique}",
        **{"allow_anonymous_broker": True, **overrides},
    )


async def seed_site(db: database.Database, unique: str) -> tuple[str, str, str]:
    """Site s<unique> with room a-101 and an admin token of that site: (site, room, token)."""
    site, room = f"s{unique}", "a-101"
    await db.add_site(site, "Test campus")
    await db.add_room(site, room, "Hall A-101", None, None, 50)
    token = auth.new_token()
    await db.add_admin_token(auth.token_hash(token), "admin", "tests", 0, site=site)
    return site, room, token


@pytest.fixture()
async def central(
    tmp_path: pathlib.Path,
    broker: broker_mod.Broker,
    clock: clock_mod.Clock | None,
    central_overrides: dict[str, typing.Any],
) -> collections.abc.AsyncIterator[Central]:
    port = broker_mod.free_port()
    unique = uuid.uuid4().hex[:10]
    settings = settings_for(
        tmp_path,
        broker,
        port,
        unique,
        **{"otp_attempts_per_minute": 3, "profile_learn_proofs": 3, **central_overrides},
    )
    app = app_mod.build(settings, clock=clock)
    server = test_utils.TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    db = stores.make(settings)
    await db.open()
    site, room, token = await seed_site(db, unique)
    operator = auth.new_token()
    await db.add_admin_token(auth.token_hash(operator), "operator", "campus it", 0)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            identifier=f"pub-{unique}",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as mqtt,
    ):
        handle = Central(
            f"http://127.0.0.1:{port}", settings, db, mqtt, http, token, site, room, operator
        )
        handle.new_phone()

        async def connected() -> bool:
            status, body = await handle.request("GET", "/healthz")
            return status == 200 and body["mqtt"] == "connected"

        await poll(connected, 15, "central's MQTT bridge to connect")
        yield handle
    await db.close()
    await server.close()


@pytest.fixture()
async def enrolled(central: Central) -> tuple[Central, ScriptedDevice]:
    """A device that enrolled over MQTT and whose first proof central stored."""
    device, code = await central.add_device("pi-a101")
    reply = await central.enroll(device, code)
    assert reply["type"] == "enrolled"
    await central.publish(device.topic("proof"), device.next_proof())

    async def stored() -> bool:
        return await central.stored_seqs(device.device) == [1]

    await poll(stored, 10, "the first proof to be stored")
    return central, device
