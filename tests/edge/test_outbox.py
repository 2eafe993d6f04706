"""The durable outbox: order, acks, bounds, and a consistent chain after SIGKILL."""

from __future__ import annotations

import pathlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from edge_agent import outbox
from edge_agent.protocol import chain


def builder(seq: int, prev: str) -> str:
    return f"proof-{seq}-{prev}"


def test_order_ack_and_reopen(tmp_path: pathlib.Path) -> None:
    box = outbox.Outbox(tmp_path / "o.db")
    compacts = [box.append_proof("t/proof", slot, slot * 1000, builder)[1] for slot in (5, 6, 7)]
    assert compacts[0] == f"proof-1-{chain.GENESIS}"
    assert compacts[1] == f"proof-2-{chain.link(compacts[0])}"
    box.put(outbox.TELEMETRY, "t/telemetry", b"{}")
    items = box.peek()
    assert [item.kind for item in items] == ["proof"] * 3 + ["telemetry"]
    assert [item.payload.decode() for item in items[:3]] == compacts
    box.ack(items[0].id)
    assert box.depth() == {"proof": 2, "telemetry": 1}
    box.close()
    reopened = outbox.Outbox(tmp_path / "o.db")
    state = reopened.chain_state()
    assert (state.seq, state.hash, state.slot) == (3, chain.link(compacts[2]), 7)
    assert [item.id for item in reopened.peek()] == [item.id for item in items[1:]]
    with pytest.raises(ValueError, match="not after"):
        reopened.append_proof("t/proof", 7, 0, builder)
    assert reopened.chain_state().seq == 3 and reopened.depth()["proof"] == 2


def test_bounds_drop_oldest_and_count(tmp_path: pathlib.Path) -> None:
    box = outbox.Outbox(tmp_path / "o.db", max_proofs=10, max_telemetry=3)
    for n in range(5):
        box.put(outbox.TELEMETRY, "t", str(n).encode())
    for slot in range(12):
        box.append_proof("p", slot, slot, builder)
    telemetry = [i.payload for i in box.peek(100) if i.kind == outbox.TELEMETRY]
    proofs = [i.payload.decode() for i in box.peek(100) if i.kind == outbox.PROOF]
    assert telemetry == [b"2", b"3", b"4"]
    assert len(proofs) == 10 and proofs[0].startswith("proof-3-")
    assert box.counters() == {"dropped_telemetry": 2, "dropped_proof": 2}
    assert box.append_proof("p", 99, 99, builder)[0] == 13


CHILD = textwrap.dedent(
    """
    import pathlib, sys
    from edge_agent import outbox
    box = outbox.Outbox(pathlib.Path(sys.argv[1]))
    slot = box.chain_state().slot + 1
    while True:
        box.append_proof("t/proof", slot, slot, lambda seq, prev: f"proof-{seq}-{prev}" + "x" * 500)
        slot += 1
    """
)


def test_sigkill_mid_append_leaves_a_consistent_chain(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "o.db"
    for _ in range(3):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)])
        deadline = time.monotonic() + 30
        start = _stored(path)
        while _stored(path) < start + 20:
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
    box = outbox.Outbox(path)
    payloads = [item.payload.decode() for item in box.peek(100_000)]
    seqs = [int(p.split("-")[1]) for p in payloads]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 60
    previous = chain.GENESIS
    for payload in payloads:
        assert payload.split("-")[2].rstrip("x") == previous
        previous = chain.link(payload)
    assert box.chain_state().seq == seqs[-1] and box.chain_state().hash == previous


def _stored(path: pathlib.Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
