"""A campus to load: central as its own process on a fresh SQLite store, provisioned directly
(sites, rooms, enrolled devices, confirmed room profiles, courses, sessions, credentials), and
scripted devices that sign real proofs and QR tokens with edge_agent.protocol.

Provisioning writes through central's own store (central/storage) instead of the CLI:
100,000 students through a subprocess each would take longer than the benchmark itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import os
import pathlib
import subprocess
import time
import typing
import zoneinfo

import aiohttp

from benchmarks import common
from central.checkin import students
from central.core import keyring
from central.domain import environment
from central.domain import timetable
from central.http import auth
from central.storage import database
from central.storage import store
from edge_agent.protocol import b64
from edge_agent.protocol import chain
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from edge_agent.protocol import topics
from tests import broker as broker_mod

SITE = "campus"
SLOT_S = 20
COOKIE = "roomproof_student"
BROWSER_COOKIE = "roomproof_browser"
ACCESS_POINTS = 4  # per proof: about 1.2 KB of JWS (DESIGN §5's reference is ~900 B)


def now_ms() -> int:
    return int(time.time() * 1000)


def room_name(index: int) -> str:
    return f"r{index:04d}"


def device_name(index: int) -> str:
    return f"pi-{index:04d}"


@dataclasses.dataclass
class Device:
    """A room device of the benchmark: its keys and chain, signing what the agent signs."""

    site: str
    room: str
    device: str
    bssids: tuple[str, ...]
    signing: keys.SigningKey = dataclasses.field(default_factory=keys.SigningKey.generate)
    agreement: keys.AgreementKey = dataclasses.field(default_factory=keys.AgreementKey.generate)
    seq: int = 0
    prev: str = chain.GENESIS
    _token: tuple[int, bytes] = (-1, b"")

    @property
    def topic(self) -> str:
        return topics.topic(self.site, self.device, "proof")

    def token(self, slot: int) -> bytes:
        if self._token[0] != slot:
            self._token = (
                slot,
                qrtoken.sign(self.signing, self.site, self.device, self.room, slot),
            )
        return self._token[1]

    def url(self, public_url: str, slot: int) -> str:
        return qrtoken.url(public_url, self.site, self.device, slot, self.token(slot))

    def env(self, index: int) -> dict[str, typing.Any]:
        """What a room's WiFi sniffer reports (its access points), as an agent would."""
        return {
            "wifi": [
                {
                    "bssid": bssid,
                    "ssid": "eduroam" if n % 2 else "campus-guest",
                    "rssi": -40 - 5 * n - index % 3,
                    "channel": (1, 6, 11, 36)[n % 4],
                    "seen": 18 + n,
                }
                for n, bssid in enumerate(self.bssids)
            ],
            "window_s": SLOT_S,
            "missing": {"ble": "off", "gps": "off"},
        }

    def next_proof(self, iat_ms: int) -> str:
        slot = slots.slot_of(iat_ms, SLOT_S)
        claims = proof.Claims.model_validate(
            {
                "site": self.site,
                "room": self.room,
                "device": self.device,
                "seq": self.seq + 1,
                "boot": "0123456789abcdef",
                "iat": iat_ms,
                "clock": {"source": "ntp", "uncertainty_ms": 8},
                "slot": slot,
                "slot_s": SLOT_S,
                "otp_step_s": 30,
                "qr": b64.encode(self.token(slot)),
                "prev": self.prev,
                "env": self.env(self.seq),
            }
        )
        compact = proof.sign(claims, self.signing)
        self.seq += 1
        self.prev = chain.link(compact)
        return compact


def start_broker(workdir: pathlib.Path) -> broker_mod.Broker:
    """A private Mosquitto (tests/broker.py), stopped with the benchmark's other children."""
    if not broker_mod.mosquitto_available():
        raise common.BenchmarkError(
            "mosquitto is not installed: run `bash .ci/setup` (apt-get install mosquitto)"
        )
    broker = broker_mod.Broker(workdir)
    broker.start()
    assert broker.process is not None
    common.CHILDREN.adopt(broker.process)
    return broker


def make_devices(count: int) -> list[Device]:
    devices = []
    for index in range(count):
        bssids = tuple(
            ":".join(f"{b:02x}" for b in (0x02, index >> 8, index & 0xFF, n, 0x10, 0x01))
            for n in range(ACCESS_POINTS)
        )
        devices.append(Device(SITE, room_name(index), device_name(index), bssids))
    return devices


@dataclasses.dataclass(frozen=True)
class Student:
    student_id: str
    room_index: int
    credential: str  # the remembered-browser token (cookie), signed with central's secret
    browser: str  # the phone's roomproof_browser cookie


class Store:
    """Central's SQLite store, opened by the benchmark before central runs."""

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.data_dir = data_dir
        keyring.ensure_data_dir(data_dir)
        self.keys = keyring.load(data_dir)  # central reads the same key files
        self.db = database.Database.sqlite(data_dir / "central.db")

    async def __aenter__(self) -> Store:
        await self.db.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.db.close()

    async def add_devices(self, devices: list[Device], confirmed_profiles: bool = True) -> None:
        """The site, one room per device, each device enrolled (keys bound) and its room's
        WiFi profile confirmed: a campus in steady state, not one still learning."""
        await self.db.add_site(SITE, "Benchmark campus")
        now = now_ms()
        for device in devices:
            await self.db.add_room(SITE, device.room, f"Hall {device.room}", None, None, 50.0)
            await self.db.add_device(SITE, device.room, device.device, "code", now + 3600_000)
            await self.db.bind_device(
                SITE, device.device, device.signing.public, device.agreement.public, now
            )
            if confirmed_profiles:
                await self.db.save_profile(
                    environment.Profile(
                        SITE,
                        device.room,
                        "confirmed",
                        frozenset(device.bssids),
                        frozenset(),
                        10,
                        10,
                        {},
                    ),
                    now,
                )

    async def first_proofs(self, devices: list[Device]) -> None:
        """One stored proof per device, so central knows its slot_s and clock offset."""
        for device in devices:
            iat = now_ms()
            compact = device.next_proof(iat)
            row = store.ProofRow(
                site=SITE,
                device=device.device,
                seq=device.seq,
                slot=slots.slot_of(iat, SLOT_S),
                iat=iat,
                received_at=iat,
                jws=compact,
                hash=chain.link(compact),
                gap_before=False,
                verdict="verified",
                reasons=("wifi overlap 100% with the room's access points",),
            )
            await self.db.store_proof(row, SLOT_S, 30, 0)

    async def admin_token(self) -> str:
        token = auth.new_token()
        await self.db.add_admin_token(auth.token_hash(token), "operator", "benchmark", now_ms())
        return token

    async def add_sessions(self, devices: list[Device], rosters: dict[int, list[str]]) -> None:
        """A course per room meeting now (roster of its students), as at the top of the hour.

        The session's timezone is chosen so that its local time is around noon: a run near
        midnight UTC does not cross a day boundary.
        """
        utc = datetime.datetime.now(datetime.UTC)
        shift = max(-12, min(14, 12 - utc.hour))
        zone = f"Etc/GMT{-shift:+d}" if shift else "UTC"
        local = utc.astimezone(zoneinfo.ZoneInfo(zone))
        start = (local - datetime.timedelta(minutes=2)).time().replace(second=0, microsecond=0)
        end = (local + datetime.timedelta(minutes=90)).time().replace(second=0, microsecond=0)
        for index, device in enumerate(devices):
            course = f"c{index:04d}"
            await self.db.add_course(store.Course(SITE, course, f"Course {index}", zone))
            await self.db.set_roster(SITE, course, rosters.get(index, []))
            await self.db.add_session(
                timetable.Session(
                    id=0,
                    site=SITE,
                    course=course,
                    room=device.room,
                    timezone=zone,
                    first_date=local.date(),
                    start=start,
                    end=end,
                    weekly=True,
                    until=None,
                    grace_min=10,
                    checkout=False,
                )
            )

    async def add_credentials(
        self, rooms: int, per_room: int, progress_every: int = 20000
    ) -> list[Student]:
        """Returning students: a remembered-browser credential each, made the way central
        issues them (students.Credentials) but without hashing a PIN per student."""
        issuer = students.Credentials(self.keys.credential_secret, 180 * 86400)
        now = now_ms()
        made: list[Student] = []
        for number in range(per_room):
            for room in range(rooms):
                student_id = f"s{room:04d}-{number:03d}"
                credential, token = issuer.issue(SITE, student_id)
                await self.db.add_credential(
                    credential.id, SITE, student_id, now, now + 180 * 86400_000
                )
                made.append(Student(student_id, room, token, b64.encode(os.urandom(24))))
                if len(made) % progress_every == 0:
                    common.progress(f"  {len(made)} credentials")
        return made

    async def add_pin_students(self, rooms: int, count: int, pin: str) -> list[tuple[str, int]]:
        """First-time students with a real Argon2id PIN hash (one hash, shared: same cost)."""
        encoded = students.hash_pin(pin)
        made = []
        for number in range(count):
            student_id = f"p{number:04d}"
            await self.db.add_student(SITE, student_id, encoded)
            made.append((student_id, number % rooms))
        return made


class Central:
    """`python -m central serve` with a TOML config, in its own process (own event loop)."""

    def __init__(
        self,
        workdir: pathlib.Path,
        mqtt_url: str,
        extra: dict[str, typing.Any] | None = None,
        profile: pathlib.Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.port = broker_mod.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "central.toml"
        self.log = workdir / "central.log"
        self.profile = profile
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        settings = {
            "data_dir": str(self.data_dir),
            "http_host": "127.0.0.1",
            "http_port": self.port,
            "public_url": self.url,
            "mqtt_url": mqtt_url,
            "mqtt_client_id": f"central-bench-{self.port}",
            "log_level": "WARNING",
            "allow_anonymous_broker": True,  # the benchmark's private broker
            **(extra or {}),
        }
        self.config.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in settings.items()))

    def start(self, wait_mqtt: bool = True) -> None:
        command = ["-m", "central", "serve", "--config", str(self.config)]
        if self.profile is not None:
            command = ["-m", "cProfile", "-o", str(self.profile), *command]
        self.process = common.CHILDREN.start(common.python(*command), log=self.log)

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                common.CHILDREN.forget(self.process)
                raise common.BenchmarkError(
                    f"central exited ({self.process.returncode}): {self.log_tail()}"
                )
            health = common.http_json(self.url + "/healthz", timeout=1)
            return bool(health) and (not wait_mqtt or health.get("mqtt") == "connected")

        common.wait_until(ready, 60, "central's /healthz (and its MQTT bridge)", every=0.1)

    def stop(self) -> None:
        if self.process is not None:
            started = time.monotonic()
            code = common.CHILDREN.stop(self.process)
            common.progress(f"central stopped in {time.monotonic() - started:.1f} s")
            self.process = None
            if code not in (0, -15):
                common.progress(f"central exited with {code}: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""


def _toml(value: typing.Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(str(value))


class EventStream:
    """An admin on /api/v1/events: every event with the time it arrived (time.time())."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/") + "/api/v1/events"
        self.token = token
        self.events: list[tuple[float, str, dict[str, typing.Any]]] = []
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> EventStream:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._task = asyncio.create_task(self._read())
        async with asyncio.timeout(15):
            await self.connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _read(self) -> None:
        assert self._session is not None
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self._session.get(self.url, headers=headers) as response:
            if response.status != 200:
                raise common.BenchmarkError(f"event stream answered {response.status}")
            kind = ""
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith(": connected"):
                    self.connected.set()
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    self.events.append((time.time(), kind, json.loads(line[6:])))
