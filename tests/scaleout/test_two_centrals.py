"""Two `python -m central serve` processes on one shared subscription and one PostgreSQL
database: every proof is stored exactly once, both take a share, both answer the same, and a
central killed mid-stream loses nothing.

Who stored what is read from each process's live event stream (`GET /api/v1/events`): a
process publishes a `proof` event only for a proof it stored itself.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import contextlib
import dataclasses
import functools
import json
import os
import pathlib
import signal
import sys
import tomllib
import typing
import uuid

import aiohttp
import aiomqtt
import pytest

from central.core import settings as settings_mod
from central.storage import database
from tests import broker as broker_mod
from tests.central import conftest

SITE, ROOM, DEVICE = "campus", "a-101", "pi-a101"
PROOFS = 300


@pytest.fixture()
def broker(own_broker: broker_mod.Broker) -> broker_mod.Broker:
    """This test's own broker. On the session's broker, the retained status of other tests'
    devices (signed with other keys, or of devices this database does not know) reaches the
    centrals here and is rightly rejected, which the exact rejection counts below would take
    for a fault of the cluster."""
    return own_broker


KILL_AFTER = 200  # seq the publisher has reached when the first central is killed

pytestmark = pytest.mark.slow


@dataclasses.dataclass
class Process:
    """One central process and the seqs its own event stream reported as stored."""

    name: str
    config: pathlib.Path
    log: pathlib.Path
    port: int
    client_id: str
    process: asyncio.subprocess.Process | None = None
    stored: list[int] = dataclasses.field(default_factory=list)
    watcher: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Same TOML for both; the port and the MQTT client id come from the environment,
        as a systemd template unit would set them."""
        env = dict(
            os.environ,
            ROOMPROOF_CENTRAL_HTTP_PORT=str(self.port),
            ROOMPROOF_CENTRAL_PUBLIC_URL=self.url,
            ROOMPROOF_CENTRAL_MQTT_CLIENT_ID=self.client_id,
        )
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "central",
                "serve",
                "--config",
                str(self.config),
                env=env,
                stdout=log,
                stderr=log,
            )

    async def connected(self, http: aiohttp.ClientSession) -> bool:
        assert self.process is not None
        if self.process.returncode is not None:
            raise AssertionError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
        try:
            async with http.get(self.url + "/healthz") as response:
                return response.status == 200 and (await response.json())["mqtt"] == "connected"
        except aiohttp.ClientError:
            return False

    async def watch(self, http: aiohttp.ClientSession, token: str) -> None:
        """Follow the event stream until it is connected, then keep recording in a task."""
        ready = asyncio.Event()

        async def follow() -> None:
            headers = {"Authorization": f"Bearer {token}"}
            kind = ""
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                async with http.get(
                    self.url + "/api/v1/events",
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=None),
                ) as response:
                    async for raw in response.content:
                        line = raw.decode().rstrip("\n")
                        ready.set()
                        if line.startswith("event: "):
                            kind = line.removeprefix("event: ")
                        elif line.startswith("data: ") and kind == "proof":
                            self.stored.append(json.loads(line.removeprefix("data: "))["seq"])

        self.watcher = asyncio.create_task(follow())
        await asyncio.wait_for(ready.wait(), 10)

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        """The event stream goes first: an open stream holds a graceful shutdown back."""
        if sig == signal.SIGKILL and self.process is not None:
            self.process.send_signal(sig)  # before anything else: mid-stream
        if self.watcher is not None:
            self.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watcher
            self.watcher = None
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.process = None


async def cli(config: pathlib.Path, *args: str) -> str:
    done = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "central",
        *args,
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(done.communicate(), 60)
    assert done.returncode == 0, f"central {args}: {out.decode()}{err.decode()}"
    return out.decode()


@pytest.fixture()
async def cluster(
    tmp_path: pathlib.Path, broker: broker_mod.Broker, pg_dsn: str
) -> collections.abc.AsyncIterator[list[Process]]:
    unique = uuid.uuid4().hex[:10]
    config = tmp_path / "central.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'database_url = "{pg_dsn}"\n'
        f'mqtt_url = "{broker.url}"\n'
        f'mqtt_share_group = "g{unique}"\n'
        'log_level = "INFO"\nallow_anonymous_broker = true\n'
    )
    processes = [
        Process(
            name,
            config,
            tmp_path / f"{name}.log",
            broker_mod.free_port(),
            f"central-{name}-{unique}",
        )
        for name in ("a", "b")
    ]
    try:
        yield processes
    finally:
        # Together: each waits out aiohttp's shutdown timeout for its event-stream handler.
        await asyncio.gather(*(process.stop() for process in processes))


@pytest.fixture()
async def db(pg_dsn: str) -> collections.abc.AsyncIterator[database.Database]:
    """A handle of the test's own on the shared database."""
    handle = database.Database.postgres(pg_dsn)
    yield handle
    await handle.close()


async def test_two_centrals_store_every_proof_once(
    cluster: list[Process],
    db: database.Database,
    tmp_path: pathlib.Path,
    broker: broker_mod.Broker,
    pg_dsn: str,
) -> None:
    first, second = cluster
    config = first.config
    # Provisioning through the CLI on the shared database; `device add` also creates
    # central's keys in the shared data_dir, before either server starts.
    await cli(config, "site", "add", "--site", SITE)
    await cli(config, "room", "add", "--site", SITE, "--room", ROOM)
    bundle = tmp_path / "bundle.toml"
    await cli(
        config,
        "device",
        "add",
        "--site",
        SITE,
        "--room",
        ROOM,
        "--device",
        DEVICE,
        "--bundle",
        str(bundle),
    )
    token = (await cli(config, "token", "create", "--role", "admin", "--site", SITE)).split()[-1]
    code = tomllib.loads(bundle.read_text())["enrollment_code"]
    for process in cluster:
        await process.start()
    await db.open()
    settings = settings_mod.CentralSettings(
        data_dir=tmp_path / "data", database_url=pg_dsn, mqtt_url=broker.url
    )
    async with (
        aiohttp.ClientSession() as http,
        aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            identifier=f"pub-{uuid.uuid4().hex}",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as mqtt,
    ):
        for process in cluster:
            await conftest.poll(
                functools.partial(process.connected, http), 30, f"central {process.name}"
            )
            await process.watch(http, token)
        # conftest.Central annotates `db` as SqliteStore; it only calls Store methods.
        handle = conftest.Central(
            first.url,
            settings,
            typing.cast(database.Database, db),
            mqtt,
            http,
            token,
            SITE,
            ROOM,
        )
        device = conftest.ScriptedDevice(SITE, ROOM, DEVICE)
        assert (await handle.enroll(device, code))["type"] == "enrolled"
        proofs = [device.next_proof() for _ in range(PROOFS)]
        topic = device.topic("proof")

        async def stored_up_to(last: int) -> bool:
            return await handle.stored_seqs(DEVICE) == list(range(1, last + 1))

        async def same_answers() -> dict[str, typing.Any]:
            answers: dict[str, typing.Any] = {}
            for path in ("/api/v1/devices", f"/api/v1/proofs?device={DEVICE}&limit=1000"):
                bodies = []
                for process in cluster:
                    async with http.get(
                        process.url + path, headers={"Authorization": f"Bearer {token}"}
                    ) as response:
                        assert response.status == 200, path
                        bodies.append(await response.json())
                assert bodies[0] == bodies[1], path
                answers[path] = bodies[0]
            return answers

        # Half the stream, every tenth proof delivered twice (a QoS 1 redelivery).
        redelivered = 0
        for seq in range(1, PROOFS // 2 + 1):
            await handle.publish(topic, proofs[seq - 1])
            if seq % 10 == 0:
                await handle.publish(topic, proofs[seq - 4])
                redelivered += 1
        await conftest.poll(functools.partial(stored_up_to, PROOFS // 2), 30, "the first half")

        async def duplicates_counted() -> bool:
            return await handle.rejections() == {"duplicate": redelivered}

        try:
            await conftest.poll(duplicates_counted, 30, f"{redelivered} duplicates counted")
        except AssertionError:  # say what was counted instead
            counts = await handle.rejections()
            raise AssertionError(f"rejections {counts}, not {redelivered} duplicates") from None
        assert sorted(first.stored + second.stored) == list(range(1, PROOFS // 2 + 1))
        assert first.stored and second.stored, "both centrals take a share"
        answers = await same_answers()
        assert answers["/api/v1/devices"]["devices"][0]["last_seq"] == PROOFS // 2

        # The rest at a steady pace; the first central is SIGKILLed in the middle of it.
        published = PROOFS // 2

        async def publish_rest() -> None:
            nonlocal published
            for seq in range(PROOFS // 2 + 1, PROOFS + 1):
                await handle.publish(topic, proofs[seq - 1])
                published = seq
                await asyncio.sleep(0.003)

        publisher = asyncio.create_task(publish_rest())

        async def kill_point() -> bool:
            return published >= KILL_AFTER and max(first.stored) > PROOFS // 2

        await conftest.poll(kill_point, 20, "the first central to be mid-stream")
        await first.stop(signal.SIGKILL)
        killed_at = published
        first_stored_before_kill = list(first.stored)
        await publisher

        async def second_continues() -> bool:
            return any(seq > killed_at for seq in second.stored)

        await conftest.poll(second_continues, 20, "the second central to continue")
        # What the broker had queued for the dead central's session (and what it held
        # unacknowledged) is delivered when that client id comes back, as systemd restarts it.
        first.stored = []
        await first.start()
        await conftest.poll(functools.partial(first.connected, http), 30, "central a again")
        await first.watch(http, token)
        await conftest.poll(functools.partial(stored_up_to, PROOFS), 30, "every proof")

        accepted = collections.Counter(first_stored_before_kill + first.stored + second.stored)
        assert [seq for seq, times in accepted.items() if times > 1] == []
        counts = await handle.rejections()
        assert set(counts) == {"duplicate"} and counts["duplicate"] >= redelivered
        answers = await same_answers()
        assert answers["/api/v1/devices"]["devices"][0]["last_seq"] == PROOFS
        listed = answers[f"/api/v1/proofs?device={DEVICE}&limit=1000"]["proofs"]
        assert [(p["seq"], p["jws"]) for p in listed] == [
            (seq, proofs[seq - 1]) for seq in range(PROOFS, 0, -1)
        ]
