"""Device clocks that step (issue 14, D2) and a restarted central's clock-offset estimate
(D6), over a real broker, real HTTP and central's injectable clock."""

from __future__ import annotations

import collections.abc
import dataclasses
import pathlib
import time
import typing
import uuid

import aiohttp
import aiomqtt
import pytest
from aiohttp import test_utils

from central import app as app_mod
from central.core import clock as clock_mod
from central.storage import stores
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from tests import broker as broker_mod
from tests.central import conftest

SLOT_MS = conftest.SLOT_S * 1000
DEVICE_BEHIND_MS = 10  # the device's clock: 10 ms behind central's, as NTP leaves it


@pytest.fixture()
def clock() -> clock_mod.SettableClock:
    # At the start of a slot of today, so enrollment codes (valid an hour) are valid.
    now = int(time.time() * 1000)
    return clock_mod.SettableClock(
        slots.slot_start_ms(slots.slot_of(now, conftest.SLOT_S), conftest.SLOT_S)
    )


@dataclasses.dataclass
class Restartable:
    """Central, which a test stops and starts again on the same port, store and broker
    session: a restart."""

    handle: conftest.Central
    clock: clock_mod.Clock
    server: test_utils.TestServer | None = None

    async def start(self) -> None:
        port = self.handle.settings.http_port
        app = app_mod.build(self.handle.settings, clock=self.clock)
        self.server = test_utils.TestServer(app, host="127.0.0.1", port=port)
        await self.server.start_server()

        async def connected() -> bool:
            status, body = await self.handle.request("GET", "/healthz")
            return status == 200 and body["mqtt"] == "connected"

        await conftest.poll(connected, 15, "central's MQTT bridge to connect")

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.close()
        self.server = None


@pytest.fixture()
async def restartable(
    tmp_path: pathlib.Path, broker: broker_mod.Broker, clock: clock_mod.SettableClock
) -> collections.abc.AsyncIterator[Restartable]:
    port = broker_mod.free_port()
    unique = uuid.uuid4().hex[:10]
    settings = conftest.settings_for(tmp_path, broker, port, unique)
    settings.data_dir.mkdir(mode=0o700)
    db = stores.make(settings)
    await db.open()
    site, room, token = await conftest.seed_site(db, unique)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            identifier=f"pub-{unique}",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as mqtt,
    ):
        handle = conftest.Central(
            f"http://127.0.0.1:{port}", settings, db, mqtt, http, token, site, room
        )
        handle.new_phone()
        central = Restartable(handle, clock)
        await central.start()
        yield central
        if central.server is not None:
            await central.stop()
    await db.close()


async def check_in(
    central: conftest.Central, device: conftest.ScriptedDevice, slot: int, student: str
) -> tuple[int, typing.Any]:
    link = qrtoken.url(central.url, device.site, device.device, slot, device.token(slot))
    return await central.request(
        "POST", "/api/v1/checkins", {"token": link, "student_id": student, "pin": "1111"}
    )


async def test_a_restarts_backlog_does_not_make_the_current_token_future(
    restartable: Restartable, clock: clock_mod.SettableClock
) -> None:
    central = restartable.handle
    device, code = await central.add_device("pi-backlog", clock.now_ms())
    await central.enroll(device, code)
    # Three slots of proofs that arrive at once: the estimate is the device's true offset.
    for n in range(1, 4):
        await central.publish(
            device.topic("proof"), device.next_proof(iat_ms=clock.now_ms() - DEVICE_BEHIND_MS)
        )

        async def stored(n: int = n) -> bool:
            return len(await central.stored_seqs(device.device)) == n

        await conftest.poll(stored, 10, f"proof {n}")
        clock.advance(SLOT_MS)
    row = await central.db.get_device(central.site, device.device)
    assert row is not None and row.clock_offset_ms == -DEVICE_BEHIND_MS
    # Central restarts. Meanwhile the device made three proofs that waited at the broker;
    # the restarted central, slow under a burst, reads the newest 6 s after it was made.
    await restartable.stop()
    queued = [clock.now_ms() + k * SLOT_MS - DEVICE_BEHIND_MS for k in range(3)]
    for iat in queued:
        await central.publish(device.topic("proof"), device.next_proof(iat_ms=iat))
    clock.advance(2 * SLOT_MS + 6000)
    await restartable.start()

    async def drained() -> bool:
        return len(await central.stored_seqs(device.device)) == 6

    await conftest.poll(drained, 10, "the backlog")
    row = await central.db.get_device(central.site, device.device)
    assert row is not None and row.clock_offset_ms == -DEVICE_BEHIND_MS, row.clock_offset_ms
    # Half a second into the next slot, the screen shows that slot's token.
    clock.set(queued[-1] + DEVICE_BEHIND_MS + SLOT_MS + 500)
    await central.add_student("s1", "1111")
    shown = slots.slot_of(clock.now_ms() - DEVICE_BEHIND_MS, conftest.SLOT_S)
    status, body = await check_in(central, device, shown, "s1")
    assert status == 201, body


async def open_alerts(central: conftest.Central, kind: str) -> list[dict[str, typing.Any]]:
    status, body = await central.request(
        "GET", "/api/v1/alerts?open=true", token=central.admin_token
    )
    assert status == 200, body
    return [alert for alert in body["alerts"] if alert["kind"] == kind]


async def test_the_first_proof_from_the_future_raises_a_clock_alert(
    central: conftest.Central, clock: clock_mod.SettableClock
) -> None:
    device, code = await central.add_device("pi-ahead", clock.now_ms())
    await central.enroll(device, code)
    await central.publish(device.topic("proof"), device.next_proof(iat_ms=clock.now_ms()))

    async def stored() -> bool:
        return await central.stored_seqs(device.device) == [1]

    await conftest.poll(stored, 10, "the first proof")
    assert await open_alerts(central, "clock") == []
    clock.advance(SLOT_MS)
    refused = (await central.rejections()).get("clock", 0)  # a store may be shared: count on
    a_day = 86_400_000
    await central.publish(device.topic("proof"), device.next_proof(iat_ms=clock.now_ms() + a_day))

    async def clock_alert() -> list[dict[str, typing.Any]]:
        return await open_alerts(central, "clock")

    (alert,) = await conftest.poll(clock_alert, 10, "a clock alert")
    assert alert["device"] == "pi-ahead" and "future" in alert["reason"], alert
    assert (await central.rejections()).get("clock", 0) == refused + 1
    assert await central.stored_seqs(device.device) == [1]


async def test_a_clock_corrected_after_running_ahead_is_accepted_and_checks_in(
    central: conftest.Central, clock: clock_mod.SettableClock
) -> None:
    """Ten minutes ahead (within tolerance: stored, clock alert), then corrected: the proof
    that declares the step is accepted, the alert clears and the token on screen works."""
    device, code = await central.add_device("pi-stepped", clock.now_ms())
    await central.enroll(device, code)
    ahead = 600_000
    for n in range(1, 4):
        await central.publish(
            device.topic("proof"), device.next_proof(iat_ms=clock.now_ms() + ahead)
        )

        async def stored(n: int = n) -> bool:
            return len(await central.stored_seqs(device.device)) == n

        await conftest.poll(stored, 10, f"proof {n}")
        clock.advance(SLOT_MS)
    assert len(await open_alerts(central, "clock")) == 1
    last_iat = clock.now_ms() - SLOT_MS + ahead
    earlier = (await central.rejections()).get("clock", 0)  # a store may be shared: count on
    # NTP corrects the clock. Going back without declaring it, or declaring too little, is
    # refused: a chain's time never goes back unexplained.
    undeclared = device.next_proof(iat_ms=clock.now_ms())
    await central.publish(device.topic("proof"), undeclared)
    device.seq, device.prev = device.seq - 1, conftest.chain.link(device.sent[-2])
    too_little = device.next_proof(iat_ms=clock.now_ms(), clock_step_ms=1000)
    await central.publish(device.topic("proof"), too_little)
    device.seq, device.prev = device.seq - 1, conftest.chain.link(device.sent[-3])

    async def refused() -> bool:
        return (await central.rejections()).get("clock", 0) == earlier + 2

    await conftest.poll(refused, 10, "two refusals")
    declared = device.next_proof(iat_ms=clock.now_ms(), clock_step_ms=last_iat - clock.now_ms())
    await central.publish(device.topic("proof"), declared)

    async def stored4() -> bool:
        return len(await central.stored_seqs(device.device)) == 4

    await conftest.poll(stored4, 10, "the proof declaring the step")
    row = await central.db.get_device(central.site, device.device)
    assert row is not None and row.clock_offset_ms == 0 and row.last_iat == clock.now_ms()

    async def cleared() -> bool:
        return await open_alerts(central, "clock") == []

    await conftest.poll(cleared, 10, "the clock alert to clear")
    await central.add_student("s2", "1111")
    shown = slots.slot_of(clock.now_ms(), conftest.SLOT_S)
    status, body = await check_in(central, device, shown, "s2")
    assert status == 201, body
