"""End-to-end acknowledgements (issue 14, D1 and D2's lost refusals): a proof leaves the room
only when central has it. Real Mosquitto (killed, with persistence that loses what it held),
real central and agent processes, real libfaketime for a clock that ran ahead."""

from __future__ import annotations

import collections.abc
import contextlib
import pathlib
import re
import signal
import sqlite3
import time

import pytest

from central.core import keyring
from edge_agent.protocol import ack
from edge_agent.protocol import b64
from edge_agent.protocol import keys
from tests import broker as broker_mod
from tests import system
from tests.faults import test_faults

QUICK = "reconnect_max_s = 2\nack_timeout_s = 2\nack_retry_max_s = 4\n"


def acks_seen(room: test_faults.Room) -> bool:
    return "central acknowledges proofs end to end" in room.agent.log.read_text()


def stored_seqs(room: test_faults.Room) -> list[int]:
    return [row["seq"] for row in room.proofs()]


def unbroken_upto(room: test_faults.Room, seq: int) -> bool:
    seqs = stored_seqs(room)
    return seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= seq


def outbox_meta(room: test_faults.Room) -> dict[str, int]:
    path = room.agent.state / "outbox.db"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT name, value FROM meta").fetchall())


@pytest.fixture()
def crashy_broker(tmp_path: pathlib.Path) -> collections.abc.Iterator[broker_mod.Broker]:
    """Persistence on, but saved only every hour (Debian's stock broker saves every 30 min):
    a SIGKILL loses everything it held."""
    with broker_mod.Broker(tmp_path / "mosquitto", autosave_s=3600) as running:
        yield running


@pytest.fixture()
def room(
    tmp_path: pathlib.Path, crashy_broker: broker_mod.Broker
) -> collections.abc.Iterator[test_faults.Room]:
    handle = test_faults.Room(tmp_path, crashy_broker, QUICK)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.mark.slow
def test_a_broker_crash_after_the_puback_loses_no_proof(room: test_faults.Room) -> None:
    room.central.start()
    room.agent.start()
    system.wait_for(lambda: room.last_seq() >= 1 and acks_seen(room), 20, "a proof and an ack")
    room.central.stop()  # its session stays at the broker, which queues the proofs for it
    before, _ = room.outbox()
    system.wait_for(lambda: room.outbox()[0] >= before + 1, 10, "a proof while central is away")
    time.sleep(0.5)  # its PUBACK: the broker holds the proof, in memory only
    lost, _ = room.outbox()
    room.broker.kill()
    room.broker.start()  # with nothing of the queue: central's session is gone too
    room.central.start()
    # Central sees the gap when the next proof comes, asks for it, and the agent still had it.
    system.wait_for(lambda: unbroken_upto(room, lost + 1), 25, f"seq 1..{lost + 1} stored")
    assert "central asked again for proofs it lacks" in room.agent.log.read_text()
    room.agent.stop(signal.SIGKILL)
    room.assert_exactly_once()


@pytest.fixture()
def old_central_room(
    tmp_path: pathlib.Path, own_broker: broker_mod.Broker
) -> collections.abc.Iterator[test_faults.Room]:
    handle = test_faults.Room(tmp_path, own_broker, QUICK)
    with handle.central.config.open("a") as config:
        config.write("device_acks = false\n")
    try:
        yield handle
    finally:
        handle.stop()


@pytest.mark.slow
def test_a_central_that_never_acks_does_not_make_the_agent_hold_proofs(
    old_central_room: test_faults.Room,
) -> None:
    room = old_central_room
    room.central.start()
    room.agent.start()
    system.wait_for(lambda: room.last_seq() >= 3, 25, "three proofs stored")
    # Each proof left on its PUBACK, as before acks: nothing waits for an ack that never comes.
    system.wait_for(lambda: room.outbox()[1] == 0, 5, "the outbox to empty")
    room.agent.stop(signal.SIGTERM)
    assert not acks_seen(room)
    assert outbox_meta(room) == {}, "no ack was seen, none is expected"
    room.assert_exactly_once()


@pytest.fixture()
def strict_clock_room(
    tmp_path: pathlib.Path, own_broker: broker_mod.Broker
) -> collections.abc.Iterator[test_faults.Room]:
    handle = test_faults.Room(tmp_path, own_broker, QUICK)
    with handle.central.config.open("a") as config:
        config.write("clock_tolerance_s = 2\n")
    try:
        yield handle
    finally:
        handle.stop()


@pytest.mark.slow
def test_proofs_from_the_future_are_kept_and_stored_once_their_time_comes(
    strict_clock_room: test_faults.Room,
) -> None:
    """D2: central refuses proofs stamped beyond its tolerance as `clock`; they are not acked
    as stored, so the agent keeps them, says so, and sends them again until central takes
    them."""
    room = strict_clock_room
    library = test_faults.faketime_library()
    room.central.start()
    room.agent.start()
    system.wait_for(lambda: room.last_seq() >= 1 and acks_seen(room), 20, "a proof and an ack")
    assert room.agent.stop(signal.SIGTERM) == 0
    before, _ = room.outbox()
    room.agent.start(LD_PRELOAD=str(library), FAKETIME="+8", FAKETIME_DONT_FAKE_MONOTONIC="1")

    def refused_as_clock() -> bool:
        status, body, _ = room.admin.request("GET", "/api/v1/rejections")
        assert status == 200, body
        return int(body["counts"].get("clock", 0)) >= 1

    system.wait_for(refused_as_clock, 15, "a proof from the future refused")
    system.wait_for(
        lambda: "stamped in the future" in room.agent.log.read_text(), 10, "the agent's warning"
    )
    assert room.agent.stop(signal.SIGTERM) == 0
    ahead, queued = room.outbox_contents()
    assert ahead > before and set(range(before + 1, ahead + 1)) <= set(queued), queued
    room.agent.start()  # the clock is corrected: it went back 8 s
    system.wait_for(lambda: unbroken_upto(room, ahead + 1), 25, f"seq 1..{ahead + 1} stored")
    room.agent.stop(signal.SIGTERM)
    room.assert_exactly_once()


def ignored_acks(room: test_faults.Room) -> dict[str, int]:
    path = room.agent.state / "metrics.prom"
    text = path.read_text() if path.exists() else ""
    found = re.findall(
        r'^roomproof_edge_acks_ignored\{[^}]*reason="(\w+)"[^}]*\} (\S+)$', text, re.M
    )
    return {reason: int(float(value)) for reason, value in found}


@pytest.fixture()
def plain_room(
    tmp_path: pathlib.Path, own_broker: broker_mod.Broker
) -> collections.abc.Iterator[test_faults.Room]:
    handle = test_faults.Room(tmp_path, own_broker, QUICK)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.mark.slow
def test_forged_misdirected_and_expired_acks_are_ignored_and_counted(
    plain_room: test_faults.Room,
) -> None:
    room = plain_room
    room.central.start()
    room.agent.start()
    system.wait_for(lambda: room.last_seq() >= 1 and acks_seen(room), 20, "a proof and an ack")
    device_key = bundle_device_key(room)
    room.central.stop()
    before, _ = room.outbox()
    system.wait_for(lambda: room.outbox()[0] >= before + 1, 10, "a proof while central is away")
    time.sleep(0.5)
    made, held = room.outbox_contents()
    assert made in held, "sent, but not acknowledged by central: kept"
    central_key = keyring.load(room.central.workdir / "data").signing
    now = int(time.time() * 1000)
    everything = ((1, 1_000_000),)
    topic = "roomproof/v1/campus/pi-a101/cmd"
    bad = {
        "bad_signature": ack.sign(
            keys.SigningKey.generate(), "campus", "pi-a101", device_key, everything, (), (), now
        ),
        "wrong_device": ack.sign(
            central_key, "campus", "pi-b202", device_key, everything, (), (), now
        ),
        "wrong_key": ack.sign(central_key, "campus", "pi-a101", bytes(32), everything, (), (), now),
        "expired": ack.sign(
            central_key, "campus", "pi-a101", device_key, everything, (), (), now - 2 * 3600_000
        ),
    }
    for payload in bad.values():
        room.broker.publish_raw(topic, payload)
    system.wait_for(
        lambda: ignored_acks(room) == dict.fromkeys(bad, 1), 15, "the agent to count each"
    )
    assert set(held) <= set(room.outbox_contents()[1]), "no ack that is not genuine counts"


def bundle_device_key(room: test_faults.Room) -> bytes:
    status, body, _ = room.admin.request("GET", "/api/v1/devices")
    assert status == 200, body
    return b64.decode(body["devices"][0]["public_key"])
