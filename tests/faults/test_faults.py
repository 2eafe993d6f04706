"""Breaking things on purpose (DESIGN §6): power cuts at random moments while the broker
restarts, a broker away for five minutes, a full disk under the agent's state dir, and a
clock stepped back an hour. Real processes, a real broker, real files; nothing simulated
inside our own code."""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import pathlib
import random
import shutil
import signal
import sqlite3
import subprocess
import time
import typing

import pytest

from edge_agent.protocol import b64
from edge_agent.protocol import chain
from edge_agent.protocol import jws
from edge_agent.protocol import proof
from tests import broker as broker_mod
from tests import system

SLOT_S = 5


class Room:
    """Central and one agent (PNG display outside the state dir) on a broker of the test's."""

    def __init__(self, tmp_path: pathlib.Path, broker: broker_mod.Broker, extra: str = "") -> None:
        self.broker = broker
        self.central = system.Central(tmp_path / "central", broker.url)
        bundle = tmp_path / "bundle.toml"
        self.admin = system.Http(self.central.url, self.central.provision(bundle))
        self.agent = system.Agent(
            tmp_path / "agent",
            bundle,
            f"slot_s = {SLOT_S}\nrequire_trusted_time = false\ntelemetry_interval_s = 2\n"
            f'png_path = "{tmp_path / "frame.png"}"\n{extra}',
        )

    def last_seq(self) -> int:
        status, body, _ = self.admin.request("GET", "/api/v1/devices")
        assert status == 200, body
        assert status == 200, body
        rows = [r for r in body["devices"] if r["device"] == "pi-a101"]
        return int(rows[0]["last_seq"]) if rows else 0

    def proofs(self) -> list[dict[str, typing.Any]]:
        status, body, _ = self.admin.request(
            "GET", "/api/v1/proofs?site=campus&device=pi-a101&limit=1000"
        )
        assert status == 200, body
        return sorted(body["proofs"], key=lambda row: row["seq"])

    def outbox(self) -> tuple[int, int]:
        """(last seq the agent made, proofs still queued), read from the agent's own outbox."""
        made, queued = self.outbox_contents()
        return made, len(queued)

    def outbox_contents(self) -> tuple[int, list[int]]:
        path = self.agent.state / "outbox.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            made = db.execute("SELECT seq FROM chain WHERE id = 1").fetchone()[0]
            payloads = db.execute(
                "SELECT payload FROM items WHERE kind = 'proof' ORDER BY id"
            ).fetchall()
        return int(made), [proof.decode(bytes(row[0]))[1].seq for row in payloads]

    def assert_exactly_once(self) -> list[dict[str, typing.Any]]:
        """With the agent stopped: every proof it made is stored once, or still queued in its
        outbox, and the stored ones form one unbroken, signed chain from seq 1. (A queued
        proof may be stored too: central's ack for it had not arrived yet.)"""
        assert self.agent.process is None, "stop the agent first: its outbox must not move"
        made, queued = self.outbox_contents()
        seen: list[int] = []

        def complete() -> bool:
            # PUBACKed by the broker is not yet stored by central: give in-flight ones a moment.
            seen[:] = [r["seq"] for r in self.proofs()]
            unbroken = seen == list(range(1, len(seen) + 1))
            return unbroken and set(range(len(seen) + 1, made + 1)) <= set(queued)

        with contextlib.suppress(AssertionError):
            system.wait_for(complete, 30, "every proof stored or queued")
        assert complete(), f"made {made}, stored {seen}, outbox holds {queued}"
        rows = self.proofs()
        status, body, _ = self.admin.request("GET", "/api/v1/devices")
        assert status == 200, body
        public = b64.decode(body["devices"][0]["public_key"])
        previous = chain.GENESIS
        last_slot = -1
        for row in rows:
            parsed, claims = proof.decode(row["jws"])
            assert jws.verify(parsed, public) and claims.prev == previous
            previous = chain.link(row["jws"])
            # Slots strictly increase, except at a proof that declares a clock step back.
            assert claims.slot > last_slot or claims.clock_step_ms, "slots must increase"
            last_slot = claims.slot
        return rows

    def stop(self) -> None:
        if self.agent.process is not None:
            self.agent.stop(signal.SIGKILL)
        self.central.stop()


@pytest.fixture()
def room(tmp_path: pathlib.Path, own_broker: broker_mod.Broker) -> typing.Iterator[Room]:
    handle = Room(tmp_path, own_broker)
    handle.central.start()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.mark.slow
def test_a_hundred_power_cuts_while_the_broker_restarts(room: Room) -> None:
    rng = random.Random(20261125)
    room.agent.start()
    system.wait_for(lambda: room.last_seq() >= 1, 60, "the first proof")
    for cut in range(100):
        if cut % 10 == 3:
            room.broker.stop()
        if cut % 10 == 7:
            room.broker.start()
        time.sleep(rng.uniform(0.05, 2.5))  # anywhere: importing, enrolling, appending, publishing
        assert room.agent.stop(signal.SIGKILL) == -signal.SIGKILL
        room.agent.start()
    made, _ = room.outbox()
    assert made >= 20, f"only {made} proofs in 100 runs"
    system.wait_for(lambda: room.last_seq() >= made and room.outbox()[1] == 0, 90, "the drain")
    room.agent.stop(signal.SIGKILL)
    rows = room.assert_exactly_once()
    assert len(rows) >= made
    status, body, _ = room.admin.request("GET", "/api/v1/rejections")
    assert status == 200, body
    assert not {"chain_broken", "fork", "bad_signature"} & set(body["counts"]), body["counts"]


@pytest.mark.slow
def test_broker_down_five_minutes_outbox_holds_then_drains(room: Room) -> None:
    room.agent.start()
    system.wait_for(lambda: room.last_seq() >= 1, 60, "the first proof")
    room.broker.stop()
    outage_s = 300
    time.sleep(outage_s)
    made, queued = room.outbox()
    assert queued >= outage_s // SLOT_S - 2, f"only {queued} proofs held"
    assert room.agent.process is not None and room.agent.process.poll() is None
    room.broker.start()
    system.wait_for(lambda: room.outbox()[1] == 0, 60, "the outbox to drain")
    system.wait_for(lambda: room.last_seq() >= made, 30, "central to store the backlog")
    room.agent.stop(signal.SIGKILL)
    room.assert_exactly_once()


def mount_tmpfs(path: pathlib.Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")


def fill(path: pathlib.Path) -> None:
    """Write until the filesystem says ENOSPC."""
    with path.open("wb") as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
                out.flush()
                os.fsync(out.fileno())


@pytest.mark.slow
def test_full_disk_under_the_state_dir_degrades_and_recovers(room: Room) -> None:
    state = room.agent.state
    mount_tmpfs(state, "4m")
    try:
        room.agent.start()
        system.wait_for(lambda: room.last_seq() >= 2, 60, "proofs before the disk fills")
        room.broker.stop()  # so that nothing leaves the outbox while the disk is full
        filler = state / "filler"
        fill(filler)
        before, _ = room.outbox()
        time.sleep(4 * SLOT_S)
        assert room.agent.process is not None and room.agent.process.poll() is None
        log = room.agent.log.read_text()
        assert "proofs paused" in log, log[-2000:]
        assert log.count("proofs paused") == 1, "the condition is logged once, not per retry"
        assert room.outbox()[0] == before, "no proof can be made on a full disk"
        frame = room.agent.workdir.parent / "frame.png"
        shown = frame.stat().st_mtime
        time.sleep(2)
        assert frame.stat().st_mtime > shown, "the screen keeps updating"

        filler.unlink()
        room.broker.start()
        system.wait_for(lambda: room.outbox()[0] > before, 3 * SLOT_S, "proofs to resume")
        assert "writable again" in room.agent.log.read_text()
        system.wait_for(
            lambda: room.last_seq() >= room.outbox()[0] and room.outbox()[1] == 0, 60, "the drain"
        )
        room.agent.stop(signal.SIGKILL)
        room.assert_exactly_once()
    finally:
        if room.agent.process is not None:
            room.agent.stop(signal.SIGKILL)
        subprocess.run(["umount", "-l", str(state)], check=False)


def faketime_library() -> pathlib.Path:
    library = next(
        (
            path
            for path in (
                pathlib.Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
                pathlib.Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
            )
            if path.exists()
        ),
        None,
    )
    if library is None or shutil.which("faketime") is None:
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    return library


def steps_back(rows: list[dict[str, typing.Any]]) -> list[tuple[proof.Claims, proof.Claims]]:
    claims = [proof.decode(r["jws"])[1] for r in rows]
    return [(a, b) for a, b in itertools.pairwise(claims) if b.iat < a.iat]


@pytest.mark.slow
def test_clock_stepped_back_an_hour_is_declared_once_and_nothing_is_refused(room: Room) -> None:
    library = faketime_library()
    room.agent.start()
    system.wait_for(lambda: room.last_seq() >= 2, 60, "proofs on true time")
    assert room.agent.stop(signal.SIGTERM) == 0
    made, _ = room.outbox()
    # The agent restarts on a system clock one hour behind (an NTP step back at boot).
    room.agent.start(LD_PRELOAD=str(library), FAKETIME="-1h", FAKETIME_DONT_FAKE_MONOTONIC="1")
    system.wait_for(lambda: room.last_seq() >= made + 3, 60, "proofs after the step back")
    room.agent.stop(signal.SIGTERM)
    # The agent really ran an hour behind: its own log lines are stamped an hour ago.
    last_line = room.agent.log.read_text().strip().splitlines()[-1]
    stamped = datetime.datetime.strptime(last_line[:23], "%Y-%m-%d %H:%M:%S,%f")
    behind_s = (datetime.datetime.now() - stamped).total_seconds()
    assert 3500 < behind_s < 3700, (behind_s, last_line)
    assert "the system clock went back 3" in room.agent.log.read_text()
    rows = room.assert_exactly_once()
    # The chain's time goes back once, at the proof that declares the step (signed).
    ((before, after),) = steps_back(rows)
    assert after.seq == before.seq + 1 and after.clock_step_ms is not None
    assert before.iat - after.iat <= after.clock_step_ms
    assert 3500_000 < after.clock_step_ms < 3700_000, after.clock_step_ms
    status, body, _ = room.admin.request("GET", "/api/v1/rejections")
    assert status == 200, body
    assert "clock" not in body["counts"], body["counts"]


@pytest.mark.slow
def test_clock_a_day_ahead_then_corrected_works_again_at_once(room: Room) -> None:
    """Issue 14, D2: a day ahead, proofs are refused (clock alert at the first); corrected,
    the agent follows the clock at once and declares the step, and its proofs are stored."""
    library = faketime_library()
    room.agent.start()
    system.wait_for(lambda: room.last_seq() >= 2, 60, "proofs on true time")
    assert room.agent.stop(signal.SIGTERM) == 0
    room.agent.start(LD_PRELOAD=str(library), FAKETIME="+1d", FAKETIME_DONT_FAKE_MONOTONIC="1")

    def clock_alert() -> bool:
        status, body, _ = room.admin.request("GET", "/api/v1/alerts?open=true")
        assert status == 200, body
        return any(a["kind"] == "clock" for a in body["alerts"])

    system.wait_for(clock_alert, 30, "a clock alert for the refused proofs")
    assert room.agent.stop(signal.SIGTERM) == 0
    made_ahead, _ = room.outbox()
    room.agent.start()  # the clock is corrected
    system.wait_for(lambda: room.last_seq() >= made_ahead + 2, 3 * SLOT_S, "proofs again")
    system.wait_for(lambda: not clock_alert(), 3 * SLOT_S, "the clock alert to clear")
    room.agent.stop(signal.SIGTERM)
    assert "the system clock went back 8639" in room.agent.log.read_text()
    rows = room.proofs()
    corrected = [proof.decode(r["jws"])[1] for r in rows if r["seq"] > made_ahead]
    assert corrected[0].clock_step_ms is not None and corrected[0].clock_step_ms > 86_000_000
    # Stamped on the corrected clock (this host's), not a day ahead.
    assert all(c.iat < time.time() * 1000 + 60_000 for c in corrected), corrected
