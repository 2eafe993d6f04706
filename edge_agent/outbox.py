"""The durable outbox: every message is on disk before it is published, until it is delivered.

Delivered means: for telemetry and other rows outside the chain, the broker's PUBACK; for a
proof, once central has acknowledged end to end (`protocol.ack`) that it settled the proof's
seq. Until central's first ack (an older central never sends one) proofs too leave on their
PUBACK. A published proof is marked `sent` (not published again unless it is re-sent); the
mark, the rows and the fact that central acknowledges survive power cuts (same database,
synchronous=FULL).

The proof hash chain state (last seq, last hash, last slot and time) lives in the same SQLite
database and changes in the same transaction as the insert, so a power cut can neither reuse a
seq nor fork the chain.

Bounds: telemetry beyond `max_telemetry` drops the oldest telemetry; proofs beyond `max_proofs`
drop the oldest proofs, logged and counted (central then sees a gap in the chain).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import sqlite3
import threading
import time
import typing

from edge_agent import keystore
from edge_agent.protocol import chain

log = logging.getLogger(__name__)

PROOF = "proof"
TELEMETRY = "telemetry"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS items_kind ON items (kind, id);
CREATE TABLE IF NOT EXISTS chain (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    slot INTEGER NOT NULL,
    iat INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# Schema migrations, by `PRAGMA user_version`: each runs once, in one transaction.
_MIGRATIONS = (
    # 1: end-to-end acks. `seq`: a proof's seq (NULL outside the chain: telemetry, key
    # changes); `sent`: published, awaiting central's ack; `meta`: whether central acks.
    "ALTER TABLE items ADD COLUMN seq INTEGER;"
    "ALTER TABLE items ADD COLUMN sent INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX IF NOT EXISTS items_seq ON items (seq);"
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
)


@dataclasses.dataclass(frozen=True)
class ChainState:
    seq: int
    hash: str
    slot: int
    iat: int


@dataclasses.dataclass(frozen=True)
class Item:
    id: int
    kind: str
    topic: str
    payload: bytes
    seq: int | None = None  # a proof's seq: held until central acknowledges it


class Outbox:
    """Thread-safe; call it from the event loop through asyncio.to_thread."""

    def __init__(self, path: pathlib.Path, max_proofs: int = 100_000, max_telemetry: int = 1000):
        self.path = path
        self.max_proofs = max_proofs
        self.max_telemetry = max_telemetry
        self._lock = threading.Lock()
        keystore.private_sqlite(path)  # 0600 with its -wal/-shm, whatever the dir's mode
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._db.execute(
            "INSERT OR IGNORE INTO chain (id, seq, hash, slot, iat) VALUES (1, 0, ?, -1, 0)",
            (chain.GENESIS,),
        )

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def chain_state(self) -> ChainState:
        with self._lock:
            row = self._db.execute("SELECT seq, hash, slot, iat FROM chain WHERE id = 1").fetchone()
        return ChainState(*row)

    def append_proof(
        self,
        topic: str,
        slot: int,
        iat: int,
        build: typing.Callable[[int, str], str],
        step_ms: int = 0,
    ) -> tuple[int, str]:
        """Build the next proof from (seq, prev) and store it with the chain state, atomically."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq, prev, last_iat = self._db.execute(
                    "SELECT seq, hash, iat FROM chain WHERE id = 1"
                ).fetchone()
                # By time, not slot number: after a slot_s change, slot numbers change scale.
                # A declared clock step back (`step_ms`) lets iat go back that far.
                if seq > 0 and iat <= last_iat and not (step_ms and iat >= last_iat - step_ms):
                    raise ValueError(f"iat {iat} is not after the last proof's iat {last_iat}")
                compact = build(seq + 1, prev)
                self._db.execute(
                    "INSERT INTO items (kind, topic, payload, created_ms, seq)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (PROOF, topic, compact.encode("ascii"), int(time.time() * 1000), seq + 1),
                )
                self._db.execute(
                    "UPDATE chain SET seq = ?, hash = ?, slot = ?, iat = ? WHERE id = 1",
                    (seq + 1, chain.link(compact), slot, iat),
                )
                self._trim(PROOF, self.max_proofs)
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (e.g. SQLITE_FULL): keep the real error.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return seq + 1, compact

    def put(self, kind: str, topic: str, payload: bytes) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO items (kind, topic, payload, created_ms) VALUES (?, ?, ?, ?)",
                    (kind, topic, payload, int(time.time() * 1000)),
                )
                self._trim(kind, self.max_proofs if kind == PROOF else self.max_telemetry)
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (e.g. SQLITE_FULL): keep the real error.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _trim(self, kind: str, limit: int) -> None:
        (count,) = self._db.execute("SELECT COUNT(*) FROM items WHERE kind = ?", (kind,)).fetchone()
        excess = count - limit
        if excess <= 0:
            return
        self._db.execute(
            "DELETE FROM items WHERE id IN"
            " (SELECT id FROM items WHERE kind = ? ORDER BY id LIMIT ?)",
            (kind, excess),
        )
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (f"dropped_{kind}", excess),
        )
        log.warning("outbox full: dropped the %d oldest %s message(s)", excess, kind)

    def peek(self, limit: int = 100) -> list[Item]:
        """The oldest messages not yet published (or due again), in the order they must go."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, topic, payload, seq FROM items WHERE sent = 0"
                " ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [Item(row[0], row[1], row[2], bytes(row[3]), row[4]) for row in rows]

    def ack(self, item_id: int) -> None:
        """Delete a delivered row (on its PUBACK: telemetry, or any row before acks)."""
        with self._lock:
            self._db.execute("DELETE FROM items WHERE id = ?", (item_id,))

    def mark_sent(self, item_id: int) -> None:
        """A proof the broker took: kept, not published again, until central's ack."""
        with self._lock:
            self._db.execute("UPDATE items SET sent = 1 WHERE id = ?", (item_id,))

    def sent_proofs(self) -> list[tuple[int, int]]:
        """(id, seq) of every proof published and awaiting central's ack."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, seq FROM items WHERE sent = 1 AND seq IS NOT NULL ORDER BY id"
            ).fetchall()
        return [(int(a), int(b)) for a, b in rows]

    def payloads(self, ids: typing.Sequence[int]) -> dict[int, bytes]:
        with self._lock:
            return {
                int(row[0]): bytes(row[1])
                for row in self._db.execute(
                    f"SELECT id, payload FROM items WHERE id IN ({','.join('?' * len(ids))})",
                    tuple(ids),
                )
            }

    def settle(self, ranges: typing.Iterable[tuple[int, int]]) -> int:
        """Delete the proofs central acknowledged (seqs in `ranges`, inclusive); how many."""
        deleted = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for first, last in ranges:
                    cursor = self._db.execute(
                        "DELETE FROM items WHERE seq BETWEEN ? AND ?", (first, last)
                    )
                    deleted += cursor.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return deleted

    def resend(self, ids: typing.Sequence[int]) -> None:
        """Publish these proofs again (in outbox order, with the rows not yet sent)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("UPDATE items SET sent = 0 WHERE id = ?", [(i,) for i in ids])
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def drop_sent(self) -> int:
        """Delete every sent row (the broker PUBACKed them): acks were turned off."""
        with self._lock:
            return int(self._db.execute("DELETE FROM items WHERE sent = 1").rowcount)

    def acks_enabled(self) -> bool:
        """Whether central was ever seen acknowledging proofs (then it always must)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'acks'").fetchone()
        return bool(row and row[0])

    def enable_acks(self) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('acks', 1)")

    def depth(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT kind, COUNT(*) FROM items GROUP BY kind").fetchall()
        return {PROOF: 0, TELEMETRY: 0, **dict(rows)}

    def unsent(self) -> int:
        """Rows still to be published: what the room's screen calls queued (a published proof
        waiting for central's ack has left the room as far as its people can see)."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM items WHERE sent = 0").fetchone()[0])

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT name, value FROM counters").fetchall())
