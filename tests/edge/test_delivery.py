"""When a proof leaves the outbox (`delivery`): on central's ack, not on the broker's PUBACK;
re-sent when central is past it; the outbox's schema migration and sent marks survive a
reopen. Real SQLite files, real signed proofs and acks."""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3

from edge_agent import delivery
from edge_agent import outbox
from edge_agent.protocol import ack
from edge_agent.protocol import b64
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken

NOW_MS = 1_790_000_000_000
KEY = keys.SigningKey(bytes(range(32)))
CENTRAL = keys.SigningKey(bytes(range(1, 33)))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_proofs(box: outbox.Outbox, count: int, iat: int = NOW_MS) -> None:
    for n in range(count):
        at = iat + n * 20_000

        def build(seq: int, prev: str, at: int = at) -> str:
            slot = at // 20_000
            claims = proof.Claims.model_validate(
                {
                    "site": "campus",
                    "room": "a-101",
                    "device": "pi-a101",
                    "seq": seq,
                    "boot": "00" * 8,
                    "iat": at,
                    "clock": {"source": "ntp", "uncertainty_ms": 10},
                    "slot": slot,
                    "slot_s": 20,
                    "otp_step_s": 30,
                    "qr": b64.encode(qrtoken.sign(KEY, "campus", "pi-a101", "a-101", slot)),
                    "prev": prev,
                    "env": {},
                }
            )
            return proof.sign(claims, KEY)

        box.append_proof("roomproof/v1/campus/pi-a101/proof", at // 20_000, at, build)


def an_ack(stored: ack.Ranges = (), missing: ack.Ranges = (), pending: ack.Ranges = ()) -> ack.Ack:
    signed = ack.sign(
        CENTRAL, "campus", "pi-a101", KEY.public, stored, missing, pending, NOW_MS
    ).encode()
    return ack.verify(signed, CENTRAL.public, "campus", "pi-a101", KEY.public, NOW_MS)


def publish_all(box: outbox.Outbox, sending: delivery.Delivery) -> list[int | None]:
    """What a drain does: publish every row due, and take each one's PUBACK."""
    items = box.peek(1000)
    for item in items:
        sending.published(item)
    return [item.seq for item in items]


def test_before_central_acks_a_proof_leaves_on_its_puback(tmp_path: pathlib.Path) -> None:
    box = outbox.Outbox(tmp_path / "o.db")
    make_proofs(box, 2)
    sending = delivery.Delivery(box, 30, 900)
    assert publish_all(box, sending) == [1, 2]
    assert box.depth()["proof"] == 0 and not box.acks_enabled()


def test_with_acks_a_proof_stays_until_an_ack_covers_it(tmp_path: pathlib.Path) -> None:
    box = outbox.Outbox(tmp_path / "o.db")
    sending = delivery.Delivery(box, 30, 900)
    sending.take(an_ack())  # central's first ack (e.g. at enrollment) says it acks
    make_proofs(box, 3)
    box.put(outbox.TELEMETRY, "roomproof/v1/campus/pi-a101/telemetry", b"{}")
    assert publish_all(box, sending) == [1, 2, 3, None]
    assert box.depth() == {"proof": 3, "telemetry": 0}  # telemetry leaves on its PUBACK
    assert box.peek() == [] and sending.unacknowledged == 3
    # The room's screen counts what is still to go out, not what waits for central's ack
    # (else its status line would flicker "1 queued" for a moment every slot).
    assert box.unsent() == 0
    make_proofs(box, 1, iat=NOW_MS + 60_000)
    assert box.unsent() == 1 and box.depth()["proof"] == 4
    publish_all(box, sending)
    box.close()
    # A power cut: the rows, their sent marks and the fact that central acks all stay.
    box = outbox.Outbox(tmp_path / "o.db")
    sending = delivery.Delivery(box, 30, 900)
    assert sending.acks_enabled and box.peek() == [] and sending.unacknowledged == 4
    assert sending.take(an_ack(stored=((1, 2),))) == 2
    assert box.depth()["proof"] == 2 and sending.unacknowledged == 2


def test_forgetting_acks_by_hand_lets_sent_proofs_go(tmp_path: pathlib.Path) -> None:
    box = outbox.Outbox(tmp_path / "o.db")
    sending = delivery.Delivery(box, 30, 900)
    sending.take(an_ack())
    make_proofs(box, 2)
    publish_all(box, sending)
    box.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "o.db")) as db:  # as the README says
        db.execute("DELETE FROM meta WHERE name = 'acks'")
        db.commit()
    box = outbox.Outbox(tmp_path / "o.db")
    sending = delivery.Delivery(box, 30, 900)
    assert not sending.acks_enabled and box.depth()["proof"] == 0


def test_a_proof_central_is_past_is_sent_again_with_backoff(tmp_path: pathlib.Path) -> None:
    box = outbox.Outbox(tmp_path / "o.db")
    clock = Clock()
    sending = delivery.Delivery(box, 30, 900, monotonic=clock)
    sending.take(an_ack())
    make_proofs(box, 4)
    publish_all(box, sending)
    clock.now += 40
    assert sending.due(NOW_MS + 10**9) == 0, "no ack came since: central may be down"
    sending.take(an_ack(stored=((3, 3),)))  # central is past 1 and 2 (lost on the way)
    assert sending.due(NOW_MS + 10**9) == 2
    assert [item.seq for item in box.peek()] == [1, 2]  # in order, before anything newer
    assert publish_all(box, sending) == [1, 2]
    clock.now += 40
    assert sending.due(NOW_MS + 10**9) == 0, "the second try waits twice as long"
    clock.now += 30
    assert sending.due(NOW_MS + 10**9) == 2 and sending.resent == 4


def test_missing_is_sent_at_once_and_the_future_waits(tmp_path: pathlib.Path) -> None:
    box = outbox.Outbox(tmp_path / "o.db")
    clock = Clock()
    sending = delivery.Delivery(box, 30, 900, monotonic=clock)
    sending.take(an_ack())
    make_proofs(box, 3)
    publish_all(box, sending)
    sending.take(an_ack(stored=((3, 3),), missing=((1, 1),)))
    assert [item.seq for item in box.peek()] == [1]
    publish_all(box, sending)
    # Seq 2 is stamped NOW_MS + 20 s: until this clock reaches that, it is not re-sent.
    clock.now += 1000
    assert sending.due(NOW_MS + 10_000) == 1 and [i.seq for i in box.peek()] == [1]
    publish_all(box, sending)
    clock.now += 1000
    assert sending.due(NOW_MS + 20_000) == 2
    assert [item.seq for item in box.peek()] == [1, 2]


def test_an_old_outbox_is_migrated_in_place(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "o.db"
    with contextlib.closing(sqlite3.connect(path)) as db:  # the schema before acks
        db.executescript(
            "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
            " topic TEXT NOT NULL, payload BLOB NOT NULL, created_ms INTEGER NOT NULL);"
            "INSERT INTO items (kind, topic, payload, created_ms) VALUES ('proof', 't', x'70', 1);"
        )
    box = outbox.Outbox(path)
    (old,) = box.peek()
    assert (old.payload, old.seq) == (b"p", None)  # no seq known: it leaves on its PUBACK
    make_proofs(box, 1)
    assert [item.seq for item in box.peek()] == [None, 1]
    box.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
    assert [item.seq for item in outbox.Outbox(path).peek()] == [None, 1]
