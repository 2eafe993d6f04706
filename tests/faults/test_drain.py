"""Issue 14 D5: after an outage the agent drains its outbox with several messages in flight
(the `mqtt_inflight` window), not one per broker round trip. Real agent, broker and central."""

from __future__ import annotations

import pathlib
import re
import signal
import time
import typing

import pytest

from tests import broker as broker_mod
from tests import system
from tests.faults import test_faults

WINDOW = 6


@pytest.fixture()
def room(
    tmp_path: pathlib.Path, own_broker: broker_mod.Broker
) -> typing.Iterator[test_faults.Room]:
    handle = test_faults.Room(tmp_path, own_broker, f"mqtt_inflight = {WINDOW}\n")
    handle.central.start()
    try:
        yield handle
    finally:
        handle.stop()


def inflight_peak(room: test_faults.Room) -> int | None:
    path = room.agent.state / "metrics.prom"
    if not path.exists():
        return None
    found = re.search(r"^roomproof_edge_mqtt_inflight_peak\{[^}]*\} (\S+)$", path.read_text(), re.M)
    return int(float(found.group(1))) if found else None


@pytest.mark.slow
def test_a_backlog_drains_with_the_window_in_flight(room: test_faults.Room) -> None:
    room.agent.start()
    system.wait_for(lambda: room.last_seq() >= 1, 60, "the first proof")
    room.broker.stop()
    # Proofs every 5 s and telemetry every 2 s: well over WINDOW rows wait in the outbox.
    time.sleep(5 * test_faults.SLOT_S)
    made, queued = room.outbox()
    assert queued >= 3, f"only {queued} proofs held"
    room.broker.start()
    system.wait_for(lambda: room.outbox()[1] == 0, 60, "the outbox to drain")
    system.wait_for(lambda: room.last_seq() >= made, 30, "central to store the backlog")
    peak = system.wait_for(
        lambda: (value := inflight_peak(room)) is not None and value >= WINDOW and value,
        30,
        "the agent's metrics to show the window used",
    )
    assert peak == WINDOW, f"at most {WINDOW} may be in flight, saw {peak}"
    room.agent.stop(signal.SIGKILL)
    room.assert_exactly_once()
