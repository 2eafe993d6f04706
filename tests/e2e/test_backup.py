"""Backup and restore drills: a running central (a real process, a private Mosquitto, a device
publishing signed proofs over MQTT) is backed up mid-ingest with `central backup`, restored
with `central restore` into a fresh data dir (and a fresh database), and started: its evidence
bundles still verify offline and its chains go on without a fork. Then what must be refused:
a wrong passphrase, a target that is not empty, a damaged or altered archive."""

from __future__ import annotations

import asyncio
import collections.abc
import concurrent.futures
import contextlib
import hashlib
import importlib.metadata
import io
import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
import typing
import uuid

import asyncpg
import paho.mqtt.client
import paho.mqtt.enums
import pytest

from central.admin import backup_archive
from central.cli import backup_cmd
from central.core import clock as clock_mod
from central.core import settings as settings_mod
from edge_agent.protocol import b64
from edge_agent.protocol import enroll
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken
from tests import broker as broker_mod
from tests import system
from tests.central import conftest as central_conftest
from tests.e2e import test_room
from tests.stores import pg

SITE, ROOM, DEVICE = "campus", "a-101", "pi-a101"
PASSPHRASE = "correct horse battery staple"
STUDENTS = {"s1": "432109", "s2": "876543", "s3": "555321"}
LATE_STUDENT = ("s4", "246810")  # checks in at the restored central


@contextlib.contextmanager
def pg_database() -> collections.abc.Iterator[str]:
    """tests/stores/pg.py's fresh database for a test that is not a coroutine."""
    loop = asyncio.new_event_loop()
    manager = pg.fresh_database()
    try:
        dsn = loop.run_until_complete(manager.__aenter__())
        try:
            yield dsn
        finally:
            loop.run_until_complete(manager.__aexit__(None, None, None))
    finally:
        loop.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request: pytest.FixtureRequest) -> collections.abc.Iterator[list[str | None]]:
    """[the database_url of the central backed up, of the one restored]: None for SQLite."""
    if request.param == "sqlite":
        yield [None, None]
        return
    with pg_database() as first, pg_database() as second:
        yield [first, second]


def make_central(
    workdir: pathlib.Path, broker: broker_mod.Broker, database_url: str | None
) -> system.Central:
    central = system.Central(workdir, broker.url)
    if database_url is not None:
        with central.config.open("a") as config:
            config.write(f'database_url = "{database_url}"\n')
    return central


class Device:
    """The scripted device of tests/central (protocol v1 through edge_agent.protocol), on a
    paho client of its own: enrolls like an agent, then publishes proofs at QoS 1."""

    def __init__(self, broker: broker_mod.Broker) -> None:
        self.scripted = central_conftest.ScriptedDevice(SITE, ROOM, DEVICE)
        self.replies: queue.Queue[bytes] = queue.Queue()
        self.client = paho.mqtt.client.Client(
            paho.mqtt.enums.CallbackAPIVersion.VERSION2,
            client_id=f"dev-{uuid.uuid4().hex}",
            protocol=paho.mqtt.client.MQTTv5,
        )
        self.client.on_message = lambda _c, _u, message: self.replies.put(message.payload)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def enroll(self, code: str, central_public: bytes) -> None:
        self.client.subscribe(self.scripted.topic("cmd"), qos=1)
        time.sleep(0.2)  # the subscription is in place before the reply can come
        request = enroll.make_request(
            code,
            SITE,
            ROOM,
            DEVICE,
            self.scripted.signing.public,
            self.scripted.agreement.public,
        )
        self.send_raw("enroll", request)
        reply = enroll.verify_reply(self.replies.get(timeout=15), central_public)
        assert reply["type"] == "enrolled", reply

    def send_raw(self, kind: str, payload: bytes | str) -> None:
        self.client.publish(self.scripted.topic(kind), payload, qos=1).wait_for_publish(10)

    def proof(self) -> int:
        """Publishes the next proof of the chain; returns its seq."""
        self.send_raw("proof", self.scripted.next_proof())
        return self.scripted.seq


def stored_seqs(admin: system.Http) -> list[int]:
    return [row["seq"] for row in test_room.stored_proofs(admin)]


def wait_stored(admin: system.Http, expected: list[int], what: str) -> None:
    system.wait_for(lambda: stored_seqs(admin) == expected, 30, what)


def gap_alerts(admin: system.Http) -> list[dict[str, typing.Any]]:
    status, body, _ = admin.request("GET", f"/api/v1/alerts?site={SITE}&kind=gap")
    assert status == 200, body
    return typing.cast(list[dict[str, typing.Any]], body["alerts"])


def central_key(http: system.Http) -> str:
    status, body, _ = http.request("GET", "/api/v1/keys")
    assert status == 200, body
    return typing.cast(str, body["ed25519"])


def check_in(
    central: system.Central, device: Device, student: str, pin: str
) -> dict[str, typing.Any]:
    _, claims = proof.decode(device.scripted.sent[-1])
    slot = claims.slot
    url = qrtoken.url(central.url, SITE, DEVICE, slot, device.scripted.token(slot))
    status, body, _ = system.Http(central.url).request(
        "POST", "/api/v1/checkins", {"token": url, "student_id": student, "pin": pin}
    )
    assert status == 201, body
    return typing.cast(dict[str, typing.Any], body["checkin"])


def evidence(admin: system.Http, checkin_id: str) -> bytes:
    status, bundle, _ = admin.request("GET", f"/api/v1/checkins/{checkin_id}/evidence")
    assert status == 200, bundle
    return json.dumps(bundle, sort_keys=True, separators=(",", ":")).encode()


def verify_offline(bundles: list[pathlib.Path], device_key: bytes, central_key_b64: str) -> None:
    """`central verify` on each bundle (side by side), as an auditor runs it: no database."""
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "central",
                "verify",
                str(bundle),
                "--device-key",
                b64.encode(device_key),
                "--central-key",
                central_key_b64,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for bundle in bundles
    ]
    for bundle, run in zip(bundles, runs, strict=True):
        out, _ = run.communicate(timeout=60)
        assert run.returncode == 0, f"{bundle}: {out}"


def provision(central: system.Central, bundle: pathlib.Path, roster: pathlib.Path) -> str:
    """Site, room, device (its bundle), students and an admin token, through the CLI (the
    commands that need only the site run side by side); returns the token."""
    central.cli("site", "add", "--site", SITE)
    rows = [f"{SITE},{student},{pin}" for student, pin in [*STUDENTS.items(), LATE_STUDENT]]
    roster.write_text("\n".join(["site,student_id,pin", *rows]) + "\n")
    device = ("device", "add", "--site", SITE, "--room", ROOM, "--device", DEVICE)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        room = pool.submit(
            lambda: [
                central.cli("room", "add", "--site", SITE, "--room", ROOM),
                central.cli(*device, "--bundle", str(bundle)),
            ]
        )
        token = pool.submit(central.cli, "token", "create", "--role", "admin", "--site", SITE)
        students = pool.submit(central.cli, "import", "students", str(roster))
        room.result(), students.result()
        return token.result().stdout.split()[-1]


@pytest.mark.slow
def test_restore_drill(
    tmp_path: pathlib.Path, own_broker: broker_mod.Broker, databases: list[str | None]
) -> None:
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    first = make_central(tmp_path / "first", own_broker, databases[0])
    bundle = tmp_path / "bundle.toml"
    token = provision(first, bundle, tmp_path / "students.csv")
    code = tomllib.loads(bundle.read_text())["enrollment_code"]
    stop = threading.Event()
    device: Device | None = None
    publisher: threading.Thread | None = None
    second: system.Central | None = None
    try:
        first.start()
        device = Device(own_broker)
        admin = system.Http(first.url, token)
        key_before = central_key(system.Http(first.url))
        device.enroll(code, b64.decode(key_before))
        for _ in range(3):
            device.proof()
        wait_stored(admin, [1, 2, 3], "the first proofs")
        bundles: dict[str, bytes] = {}
        for student, pin in STUDENTS.items():
            checkin = check_in(first, device, student, pin)
            bundles[checkin["id"]] = evidence(admin, checkin["id"])
            wait_stored(admin, list(range(1, device.proof() + 1)), "a proof")

        # Proofs keep arriving while `central backup` runs.
        def publish() -> None:
            while not stop.is_set():
                device.proof()
                time.sleep(0.02)

        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()
        archive = tmp_path / "backups" / "drill.tar.gz"
        done = first.cli("backup", "--out", str(archive), "--passphrase-file", str(passphrase_file))
        assert done.stdout.strip() == str(archive)
        assert "backup: wrote" in done.stderr  # progress goes to stderr
        time.sleep(0.3)
        stop.set()
        publisher.join(10)
        last = device.scripted.seq
        wait_stored(admin, list(range(1, last + 1)), "every proof at the first central")
        first.stop()

        manifest = backup_archive.read_manifest(archive)
        in_backup = manifest["tables"]["proofs"]
        assert 6 <= in_backup < last, (in_backup, last)  # taken mid-ingest
        assert manifest["tables"]["checkins"] == len(STUDENTS)
        assert manifest["engine"] == ("sqlite" if databases[0] is None else "postgresql")
        assert archive.stat().st_mode & 0o777 == 0o600

        second = make_central(tmp_path / "second", own_broker, databases[1])
        done = second.cli("restore", str(archive), "--passphrase-file", str(passphrase_file))
        assert "restored" in done.stdout
        second.start()
        admin = system.Http(second.url, token)  # the tokens came back with the database
        assert central_key(system.Http(second.url)) == key_before
        assert stored_seqs(admin) == list(range(1, in_backup + 1))
        paths = []
        for checkin_id, raw in bundles.items():
            paths.append(tmp_path / f"{checkin_id}.json")
            paths[-1].write_bytes(raw)
            assert evidence(admin, checkin_id) == raw  # the stored countersignature

        # The chain goes on: the next proof is accepted over the gap the backup left, and the
        # proofs that came after the snapshot, when they reach central again (as the broker's
        # queue or an unacknowledged outbox would send them), fill it: no fork, no break.
        device.proof()
        wait_stored(
            admin, [*range(1, in_backup + 1), last + 1], "the next proof at the restored central"
        )
        gap = f"seq {in_backup + 1}..{last} missing"
        system.wait_for(
            lambda: [(a["reason"], a["open"]) for a in gap_alerts(admin)] == [(gap, True)],
            10,
            f"a gap alert ({gap})",
        )
        for compact in device.scripted.sent[in_backup:last]:
            device.send_raw("proof", compact)
        wait_stored(admin, list(range(1, last + 2)), "the gap filled")
        system.wait_for(
            lambda: [a["open"] for a in gap_alerts(admin)] == [False], 10, "the gap alert cleared"
        )
        public = device.scripted.signing.public
        test_room.assert_valid_chain(test_room.stored_proofs(admin), public)
        checkin = check_in(second, device, *LATE_STUDENT)
        paths.append(tmp_path / "after.json")
        paths[-1].write_bytes(evidence(admin, checkin["id"]))
        verify_offline(paths, public, key_before)  # those from before and the new one
    finally:
        stop.set()
        if publisher is not None:
            publisher.join(10)
        if device is not None:
            device.close()
        first.stop()
        if second is not None:
            second.stop()


# Refusals and scheduling: a central's data dir made by the CLI (no server needed) ----------


def run(
    config: pathlib.Path, *args: str, passphrase: str | None = PASSPHRASE
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != backup_cmd.PASSPHRASE_ENV}
    if passphrase is not None:
        env[backup_cmd.PASSPHRASE_ENV] = passphrase
    return subprocess.run(
        [sys.executable, "-m", "central", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def config_for(folder: pathlib.Path, database_url: str | None = None) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "central.toml"
    text = f'data_dir = "{folder / "data"}"\nallow_anonymous_broker = true\n'
    if database_url is not None:
        text += f'database_url = "{database_url}"\n'
    config.write_text(text)
    return config


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    """(the config of a provisioned SQLite central, an archive of it)."""
    folder = tmp_path_factory.mktemp("source")
    config = config_for(folder)
    for args in (
        ("site", "add", "--site", SITE),
        ("room", "add", "--site", SITE, "--room", ROOM),
        (
            "device",
            "add",
            "--site",
            SITE,
            "--room",
            ROOM,
            "--device",
            DEVICE,
            "--bundle",
            str(folder / "bundle.toml"),
        ),
    ):
        done = run(config, *args)
        assert done.returncode == 0, done.stderr
    archive = folder / "made.tar.gz"
    done = run(config, "backup", "--out", str(archive))
    assert done.returncode == 0, done.stderr
    return config, archive


def test_manifest_states_contents_hashes_and_the_injected_time(
    made: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    config, _ = made
    settings = settings_mod.load(config)
    clock = clock_mod.SettableClock(1_800_000_000_123)
    out = tmp_path / "backups" / "one.tar.gz"
    manifest = backup_cmd.backup_to(settings, out, PASSPHRASE, clock)
    assert manifest["created_at"] == "2027-01-15T08:00:00.123Z"
    assert manifest["created_at_ms"] == clock.now_ms()
    assert manifest["engine"] == "sqlite" and manifest["format_version"] == 1
    assert manifest["central_version"] == importlib.metadata.version("roomproof")
    assert manifest["tables"]["sites"] == 1 and manifest["tables"]["devices"] == 1
    assert manifest == backup_archive.read_manifest(out)
    assert out.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == ["one.tar.gz"]  # no temp left
    with tarfile.open(out, "r:gz") as tar:
        names = tar.getnames()
        assert names == ["manifest.json", "keys.sealed", "database/central.db"]
        for name, member in manifest["members"].items():
            handle = tar.extractfile(name)
            assert handle is not None
            data = handle.read()
            assert hashlib.sha256(data).hexdigest() == member["sha256"]
            assert len(data) == member["bytes"]
        sealed = tar.extractfile("keys.sealed")
        assert sealed is not None
        key = (settings.data_dir / "central-ed25519.key").read_bytes()
        assert key not in sealed.read()  # the keys are not stored in the clear


def repack(
    source: pathlib.Path, target: pathlib.Path, change: typing.Callable[[str, bytes], bytes]
) -> None:
    """A copy of the archive whose members `change` rewrites (a valid gzip'd tar still)."""
    with tarfile.open(source, "r:gz") as old, tarfile.open(target, "w:gz") as new:
        for member in old.getmembers():
            handle = old.extractfile(member)
            assert handle is not None
            data = change(member.name, handle.read())
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))


def test_restore_refuses_and_writes_nothing(
    made: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    _, archive = made
    target = config_for(tmp_path / "target")
    data_dir = tmp_path / "target" / "data"

    def refused(archive: pathlib.Path, expected: str, passphrase: str | None = PASSPHRASE) -> None:
        done = run(target, "restore", str(archive), passphrase=passphrase)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert done.returncode == 1 and len(errors) == 1, done.stderr
        assert expected in errors[0], errors[0]
        assert "Traceback" not in done.stderr
        assert not data_dir.exists()
        assert sorted(p.name for p in (tmp_path / "target").iterdir()) == ["central.toml"]

    refused(archive, "wrong passphrase", passphrase="not the passphrase at all")
    refused(archive, "no passphrase: give --passphrase-file FILE", passphrase=None)
    refused(tmp_path / "missing.tar.gz", "no such file")

    raw = archive.read_bytes()
    damaged = tmp_path / "damaged.tar.gz"
    middle = len(raw) // 2
    damaged.write_bytes(raw[:middle] + bytes([raw[middle] ^ 0xFF]) + raw[middle + 1 :])
    refused(damaged, "damaged")
    damaged.write_bytes(raw[: len(raw) // 3])
    refused(damaged, "damaged")
    damaged.write_bytes(b"not an archive at all")
    refused(damaged, "not a readable backup archive")

    def flip_database(name: str, data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1]) if name.startswith("database/") else data

    altered = tmp_path / "altered.tar.gz"
    repack(archive, altered, flip_database)
    refused(altered, "database/central.db does not match the manifest's SHA-256")

    # The manifest rewritten to match an altered database: the sealed hash gives it away.
    database = {}

    def flip_and_rehash(name: str, data: bytes) -> bytes:
        if name.startswith("database/"):
            database["sha256"] = hashlib.sha256(flip_database(name, data)).hexdigest()
            return flip_database(name, data)
        return data

    repack(archive, altered, flip_and_rehash)

    def rewrite_manifest(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        manifest["members"]["database/central.db"]["sha256"] = database["sha256"]
        return json.dumps(manifest).encode()

    forged = tmp_path / "forged.tar.gz"
    repack(altered, forged, rewrite_manifest)
    refused(forged, "the manifest was altered")

    # A member the manifest does not name (here one that would escape the data dir).
    with tarfile.open(archive, "r:gz") as old, tarfile.open(altered, "w:gz") as new:
        for member in old.getmembers():
            new.addfile(member, old.extractfile(member))
        extra = tarfile.TarInfo("../central.toml")
        extra.size = 4
        new.addfile(extra, io.BytesIO(b"evil"))
    refused(altered, "unexpected member '../central.toml'")

    # A data dir that is not empty is left as it was.
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("mine")
    done = run(target, "restore", str(archive))
    assert done.returncode == 1 and "error: data_dir" in done.stderr
    assert "is not empty" in done.stderr
    assert [p.name for p in data_dir.iterdir()] == ["notes.txt"]


def test_restore_refuses_a_database_that_is_not_empty(
    made: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    _, archive = made
    with pg_database() as dsn:

        async def tables(sql: str | None = None) -> int:
            conn = await asyncpg.connect(dsn)
            try:
                if sql:
                    await conn.execute(sql)
                return int(
                    await conn.fetchval(
                        "SELECT count(*) FROM information_schema.tables"
                        " WHERE table_schema = 'public'"
                    )
                )
            finally:
                await conn.close()

        assert asyncio.run(tables("CREATE TABLE precious (id int)")) == 1
        target = config_for(tmp_path / "target", dsn)
        done = run(target, "restore", str(archive))
        assert done.returncode == 1, done.stderr
        assert "is not empty (1 tables): restore only into a new, empty database" in done.stderr
        assert asyncio.run(tables()) == 1
        assert not (tmp_path / "target" / "data").exists()
        # An empty database, but the archive is of SQLite: said so, nothing written.
        asyncio.run(tables("DROP TABLE precious"))
        done = run(target, "restore", str(archive))
        assert done.returncode == 1 and "holds a sqlite database" in done.stderr
        assert asyncio.run(tables()) == 0


def test_backup_refuses_weak_passphrases_and_odd_options(
    made: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    config, _ = made
    out = tmp_path / "b.tar.gz"
    done = run(config, "backup", "--out", str(out), passphrase="short")
    assert done.returncode == 1 and "at least 12 characters" in done.stderr
    done = run(config, "backup", "--out", str(out), "--every", "10m")
    assert done.returncode == 2 and "--every and --keep go with --out-dir" in done.stderr
    done = run(config, "backup", "--out-dir", str(tmp_path), "--every", "ten")
    assert done.returncode == 2 and "expected e.g. 10m" in done.stderr
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text("from a file, not the environment\n")
    done = run(
        config,
        "backup",
        "--out",
        str(out),
        "--passphrase-file",
        str(passphrase_file),
        passphrase=None,
    )
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob(".*"))  # no temp files or folders left
    target = config_for(tmp_path / "target")
    assert run(target, "restore", str(out), passphrase=PASSPHRASE).returncode == 1
    restored = run(target, "restore", str(out), passphrase="from a file, not the environment")
    assert restored.returncode == 0, restored.stderr


def test_backup_every_keeps_the_newest(
    made: tuple[pathlib.Path, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    config, _ = made
    folder = tmp_path / "backups"
    env = dict(os.environ, **{backup_cmd.PASSPHRASE_ENV: PASSPHRASE})
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "central",
            "backup",
            "--out-dir",
            str(folder),
            "--every",
            "1s",
            "--keep",
            "2",
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        written = [process.stdout.readline().strip() for _ in range(3)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(set(written)) == 3 and all(w.startswith(str(folder)) for w in written)
    kept = sorted(str(p) for p in folder.iterdir())
    # A fourth run may have finished between the third line and SIGTERM (a loaded machine):
    # either way the two newest are kept, the third printed is one of them, the first is gone.
    assert len(kept) == 2 and written[2] in kept and written[0] not in kept, (kept, written)
    for path in folder.iterdir():
        assert backup_archive.read_manifest(path)["engine"] == "sqlite"
