"""The embedded store: one SQLite file (WAL) through aiosqlite, schema versioned at open."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import json
import pathlib
import sqlite3
import typing

import aiosqlite

from central import environment
from central import store
from central import timetable
from edge_agent import keystore

SCHEMA_VERSION = 10
RECENT_REJECTIONS = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sites (site TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    site TEXT NOT NULL REFERENCES sites(site), room TEXT NOT NULL, name TEXT NOT NULL,
    lat REAL, lon REAL, radius_m REAL NOT NULL DEFAULT 50, PRIMARY KEY (site, room));
CREATE TABLE IF NOT EXISTS devices (
    site TEXT NOT NULL, device TEXT NOT NULL, room TEXT NOT NULL,
    ed25519 BLOB, x25519 BLOB, enroll_code TEXT, enroll_expires_ms INTEGER, enrolled_at INTEGER,
    last_seq INTEGER NOT NULL DEFAULT 0, last_hash TEXT, last_proof_at INTEGER, last_iat INTEGER,
    last_slot INTEGER, slot_s INTEGER, otp_step_s INTEGER, clock_offset_ms INTEGER,
    online INTEGER NOT NULL DEFAULT 0, status_at INTEGER,
    PRIMARY KEY (site, device), FOREIGN KEY (site, room) REFERENCES rooms(site, room));
CREATE TABLE IF NOT EXISTS proofs (
    site TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL, slot INTEGER NOT NULL,
    iat INTEGER NOT NULL, received_at INTEGER NOT NULL, jws TEXT NOT NULL, hash TEXT NOT NULL,
    gap_before INTEGER NOT NULL DEFAULT 0, verdict TEXT, PRIMARY KEY (site, device, seq));
CREATE INDEX IF NOT EXISTS proofs_slot ON proofs (site, device, slot);
CREATE TABLE IF NOT EXISTS rejection_counts (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rejection_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, topic TEXT NOT NULL,
    reason TEXT NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS students (
    site TEXT NOT NULL REFERENCES sites(site), student_id TEXT NOT NULL, pin_hash TEXT NOT NULL,
    PRIMARY KEY (site, student_id));
CREATE TABLE IF NOT EXISTS credentials (
    id TEXT PRIMARY KEY, site TEXT NOT NULL, student_id TEXT NOT NULL, created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS admin_tokens (
    hash TEXT PRIMARY KEY, role TEXT NOT NULL, name TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS checkins (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, room TEXT NOT NULL,
    device TEXT NOT NULL, student_id TEXT NOT NULL, slot INTEGER NOT NULL, method TEXT NOT NULL,
    created_at INTEGER NOT NULL, token_age_ms INTEGER NOT NULL,
    UNIQUE (site, student_id, device, slot));
CREATE INDEX IF NOT EXISTS checkins_room ON checkins (site, room, created_at);
"""

# Each entry upgrades a database from the version before it; run in order at open.
_MIGRATIONS = {
    2: """
ALTER TABLE devices ADD COLUMN last_verdict TEXT;
ALTER TABLE proofs ADD COLUMN reasons TEXT;
CREATE TABLE room_profiles (
    site TEXT NOT NULL, room TEXT NOT NULL, state TEXT NOT NULL, wifi TEXT NOT NULL,
    ble TEXT NOT NULL, learn_target INTEGER NOT NULL, learned INTEGER NOT NULL,
    counts TEXT NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (site, room));
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, device TEXT NOT NULL,
    kind TEXT NOT NULL, reason TEXT NOT NULL, raised_at INTEGER NOT NULL, cleared_at INTEGER);
CREATE UNIQUE INDEX alerts_open ON alerts (site, device, kind) WHERE cleared_at IS NULL;
""",
    3: """
CREATE TABLE chain_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, device TEXT NOT NULL,
    kind TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL, detail TEXT NOT NULL,
    detected_at INTEGER NOT NULL, resolved_at INTEGER);
CREATE INDEX chain_events_device ON chain_events (site, device, kind, resolved_at);
""",
    4: """
ALTER TABLE checkins ADD COLUMN status TEXT NOT NULL DEFAULT 'present';
ALTER TABLE checkins ADD COLUMN flags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE checkins ADD COLUMN evidence TEXT NOT NULL DEFAULT '{}';
ALTER TABLE checkins ADD COLUMN session_id INTEGER;
ALTER TABLE checkins ADD COLUMN session_date TEXT;
ALTER TABLE checkins ADD COLUMN checked_out_at INTEGER;
ALTER TABLE checkins ADD COLUMN record_jws TEXT;
ALTER TABLE checkins ADD COLUMN browser TEXT;
CREATE INDEX checkins_browser ON checkins (browser, created_at);
CREATE INDEX checkins_student ON checkins (site, student_id, id);
CREATE UNIQUE INDEX checkins_once_per_session ON checkins (session_id, session_date, student_id)
    WHERE session_id IS NOT NULL;
CREATE TABLE courses (
    site TEXT NOT NULL REFERENCES sites(site), course TEXT NOT NULL, name TEXT NOT NULL,
    timezone TEXT NOT NULL, PRIMARY KEY (site, course));
CREATE TABLE enrolments (
    site TEXT NOT NULL, course TEXT NOT NULL, student_id TEXT NOT NULL,
    PRIMARY KEY (site, course, student_id), FOREIGN KEY (site, course) REFERENCES courses);
CREATE INDEX enrolments_student ON enrolments (site, student_id);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, course TEXT NOT NULL,
    room TEXT NOT NULL, timezone TEXT NOT NULL, first_date TEXT NOT NULL, starts TEXT NOT NULL,
    ends TEXT NOT NULL, weekly INTEGER NOT NULL, until TEXT, grace_min INTEGER NOT NULL,
    checkout INTEGER NOT NULL, FOREIGN KEY (site, course) REFERENCES courses,
    FOREIGN KEY (site, room) REFERENCES rooms);
CREATE INDEX sessions_room ON sessions (site, room);
CREATE TABLE attendance_overrides (
    session_id INTEGER NOT NULL REFERENCES sessions(id), session_date TEXT NOT NULL,
    student_id TEXT NOT NULL, status TEXT NOT NULL, note TEXT NOT NULL, set_by TEXT NOT NULL,
    set_at INTEGER NOT NULL, PRIMARY KEY (session_id, session_date, student_id));
CREATE TABLE verify_links (
    id INTEGER PRIMARY KEY AUTOINCREMENT, token_hash TEXT NOT NULL UNIQUE,
    checkin_id INTEGER NOT NULL REFERENCES checkins(id), created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, revoked_at INTEGER);
""",
    5: """
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL);
""",
    6: """
CREATE TABLE token_courses (
    hash TEXT NOT NULL REFERENCES admin_tokens(hash) ON DELETE CASCADE, site TEXT NOT NULL,
    course TEXT NOT NULL, PRIMARY KEY (hash, site, course));
""",
    7: """
ALTER TABLE devices ADD COLUMN enroll_room TEXT;
CREATE TABLE device_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, device TEXT NOT NULL,
    room TEXT NOT NULL, from_seq INTEGER NOT NULL, ed25519 BLOB NOT NULL, x25519 BLOB NOT NULL,
    kind TEXT NOT NULL, added_at INTEGER NOT NULL, evidence TEXT NOT NULL DEFAULT '');
CREATE INDEX device_keys_device ON device_keys (site, device, from_seq);
INSERT INTO device_keys (site, device, room, from_seq, ed25519, x25519, kind, added_at)
    SELECT site, device, room, 1, ed25519, x25519, 'enroll', COALESCE(enrolled_at, 0)
    FROM devices WHERE ed25519 IS NOT NULL AND x25519 IS NOT NULL;
""",
    8: """
CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, url TEXT NOT NULL, events TEXT NOT NULL,
    description TEXT NOT NULL, secret TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id TEXT NOT NULL, event_type TEXT NOT NULL, body TEXT NOT NULL,
    created_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_status INTEGER,
    last_error TEXT, next_attempt_at INTEGER, delivered_at INTEGER,
    UNIQUE (webhook_id, event_id));
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE TABLE webhook_cursors (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
""",
    9: """
ALTER TABLE admin_tokens ADD COLUMN site TEXT;
ALTER TABLE audit_log ADD COLUMN site TEXT;
ALTER TABLE webhooks ADD COLUMN site TEXT;
CREATE INDEX audit_log_site ON audit_log (site, id);
"""
    + store.SEAL_SITES,
    10: """
ALTER TABLE devices ADD COLUMN otp_digest TEXT;
ALTER TABLE device_keys ADD COLUMN note TEXT NOT NULL DEFAULT '';
"""
    + store.BACKFILL_ENROLL_EVIDENCE,
}

_DEVICE_COLUMNS = (
    "site, room, device, ed25519, x25519, enroll_code, enroll_expires_ms, enrolled_at, last_seq,"
    " last_hash, last_proof_at, last_iat, last_slot, slot_s, otp_step_s, clock_offset_ms, online,"
    " status_at, last_verdict, otp_digest"
)
_PROOF_COLUMNS = (
    "site, device, seq, slot, iat, received_at, jws, hash, gap_before, verdict, reasons"
)
_CHAIN_COLUMNS = "id, site, device, kind, first, last, detail, detected_at, resolved_at"
_ALERT_COLUMNS = "id, site, device, kind, reason, raised_at, cleared_at"
_CHECKIN_COLUMNS = (
    "id, site, room, device, student_id, slot, method, created_at, token_age_ms, status, flags,"
    " evidence, session_id, session_date, checked_out_at, record_jws"
)
_SESSION_COLUMNS = (
    "id, site, course, room, timezone, first_date, starts, ends, weekly, until, grace_min, checkout"
)
_LINK_COLUMNS = "id, checkin_id, created_at, expires_at, revoked_at"
_KEY_COLUMNS = "id, site, device, room, from_seq, ed25519, x25519, kind, added_at, evidence, note"
_WEBHOOK_COLUMNS = "id, url, events, description, secret, created_at, site"
_DELIVERY_COLUMNS = (
    "id, webhook_id, event_id, event_type, body, created_at, attempts, last_status, last_error,"
    " next_attempt_at, delivered_at"
)


def _device(row: typing.Any) -> store.Device:
    values = list(row)
    values[3] = bytes(values[3]) if values[3] is not None else None
    values[4] = bytes(values[4]) if values[4] is not None else None
    values[16] = bool(values[16])
    return store.Device(*values)


def _key(row: typing.Any) -> store.DeviceKey:
    values = list(row)
    values[5], values[6] = bytes(values[5]), bytes(values[6])
    return store.DeviceKey(*values)


def _checkin(row: typing.Any) -> store.Checkin:
    return store.Checkin(
        *row[:9],
        row[9],
        tuple(json.loads(row[10])),
        json.loads(row[11]),
        *row[12:],
    )


def _session(row: typing.Any) -> timetable.Session:
    return timetable.Session(
        id=row[0],
        site=row[1],
        course=row[2],
        room=row[3],
        timezone=row[4],
        first_date=datetime.date.fromisoformat(row[5]),
        start=datetime.time.fromisoformat(row[6]),
        end=datetime.time.fromisoformat(row[7]),
        weekly=bool(row[8]),
        until=datetime.date.fromisoformat(row[9]) if row[9] else None,
        grace_min=row[10],
        checkout=bool(row[11]),
    )


def _proof(row: typing.Any) -> store.ProofRow:
    return store.ProofRow(*row[:8], bool(row[8]), row[9], tuple(json.loads(row[10] or "[]")))


WRITE_BATCH = 256
_BatchedWrite = typing.Callable[..., typing.Any]
_PendingWrite = tuple[_BatchedWrite, tuple[typing.Any, ...], asyncio.Future[typing.Any]]
_INSERT_CHECKIN = (
    "INSERT INTO checkins (site, room, device, student_id, slot, method, created_at,"
    " token_age_ms, status, flags, evidence, browser, session_id, session_date)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BROWSER_STUDENTS = (
    "SELECT COUNT(DISTINCT student_id) FROM checkins WHERE browser = ?"
    " AND student_id != ? AND ((? IS NOT NULL AND session_id = ? AND session_date = ?)"
    " OR (? IS NULL AND room = ? AND created_at >= ?))"
)


def _run_batch(
    conn: sqlite3.Connection, batch: list[_PendingWrite]
) -> list[typing.Any | Exception]:
    """In aiosqlite's thread: each write in its own savepoint, one commit for all. A write's
    own failure (a duplicate, a refused credential) ends only that write."""
    outcomes: list[typing.Any | Exception] = []
    try:
        if not conn.in_transaction:
            conn.execute("BEGIN")
        for write, args, _ in batch:
            conn.execute("SAVEPOINT write")
            try:
                outcomes.append(write(conn, *args))
            except sqlite3.IntegrityError as exc:
                conn.execute("ROLLBACK TO write")
                outcomes.append(store.Conflict(str(exc)))
            except sqlite3.Error:
                raise  # the database itself failed: the whole batch fails
            except Exception as exc:  # CredentialInactive, or a decision that failed
                conn.execute("ROLLBACK TO write")
                outcomes.append(exc)
            conn.execute("RELEASE write")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return outcomes


def _store_proof(
    conn: sqlite3.Connection,
    row: store.ProofRow,
    slot_s: int,
    otp_step_s: int,
    clock_offset_ms: int,
    otp_digest: str,
) -> None:
    conn.execute(
        "INSERT INTO proofs (site, device, seq, slot, iat, received_at, jws, hash,"
        " gap_before, verdict, reasons) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.site,
            row.device,
            row.seq,
            row.slot,
            row.iat,
            row.received_at,
            row.jws,
            row.hash,
            int(row.gap_before),
            row.verdict,
            json.dumps(list(row.reasons)),
        ),
    )
    conn.execute(
        "UPDATE devices SET last_seq = ?, last_hash = ?, last_proof_at = ?, last_iat = ?,"
        " last_slot = ?, slot_s = ?, otp_step_s = ?, clock_offset_ms = ?,"
        " last_verdict = ?, otp_digest = ? WHERE site = ? AND device = ? AND last_seq < ?",
        (
            row.seq,
            row.hash,
            row.received_at,
            row.iat,
            row.slot,
            slot_s,
            otp_step_s,
            clock_offset_ms,
            row.verdict,
            otp_digest,
            row.site,
            row.device,
            row.seq,
        ),
    )


def _record_checkin(
    conn: sqlite3.Connection, context: store.CheckinContext, decide: store.DecideCheckin
) -> store.Checkin:
    if context.credential_id is not None:
        active = conn.execute(
            "SELECT 1 FROM credentials WHERE id = ? AND revoked = 0 AND expires_at > ?",
            (context.credential_id, context.now_ms),
        ).fetchone()
        if active is None:
            raise store.CredentialInactive(context.credential_id)
    session = context.session_id
    (others,) = conn.execute(
        _BROWSER_STUDENTS,
        (
            context.browser,
            context.student_id,
            session,
            session,
            context.session_date,
            session,
            context.room,
            context.since_ms,
        ),
    ).fetchone()
    new = decide(int(others))
    cursor = conn.execute(_INSERT_CHECKIN, store.checkin_params(new))
    return store.stored_checkin(new, int(cursor.lastrowid or 0))


_P = typing.ParamSpec("_P")
_R = typing.TypeVar("_R")


def _serialized(
    method: typing.Callable[typing.Concatenate[SqliteStore, _P], typing.Awaitable[_R]],
) -> typing.Callable[typing.Concatenate[SqliteStore, _P], typing.Awaitable[_R]]:
    """One write at a time: the store has one connection, so without this a rollback in one
    task (a refused duplicate) would discard another task's uncommitted insert."""

    @functools.wraps(method)
    async def locked(self: SqliteStore, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        async with self.write_lock:
            return await method(self, *args, **kwargs)

    return locked


class SqliteStore:
    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self.write_lock = asyncio.Lock()
        self._batch: list[_PendingWrite] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        keystore.private_sqlite(self.path)  # 0600 with its -wal/-shm, whatever the dir's mode
        self._db = await aiosqlite.connect(self.path)
        await self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: each commit (a group commit of check-ins and proofs) is fsynced before the
        # 201 or the PUBACK goes out; NORMAL survives a SIGKILL, not a power cut.
        await self.db.execute("PRAGMA synchronous=FULL")
        await self.db.execute("PRAGMA foreign_keys=ON")
        await self.db.execute("PRAGMA busy_timeout=5000")
        await self.db.executescript(_SCHEMA)
        async with self.db.execute("SELECT version FROM schema_version") as cursor:
            row = await cursor.fetchone()
        version = 1 if row is None else int(row[0])
        if row is None:
            await self.db.execute("INSERT INTO schema_version VALUES (1)")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            await self.db.executescript(_MIGRATIONS[target])
            await self.db.execute("UPDATE schema_version SET version = ?", (target,))
        if row is not None and row[0] > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: database schema {row[0]} is newer than"
                f" this central ({SCHEMA_VERSION})"
            )
        await self.db.commit()

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _write(self, sql: str, params: tuple[typing.Any, ...]) -> int:
        try:
            cursor = await self.db.execute(sql, params)
            await self.db.commit()
        except sqlite3.IntegrityError as exc:
            await self.db.rollback()
            raise store.Conflict(str(exc)) from exc
        return cursor.rowcount

    async def _one(self, sql: str, params: tuple[typing.Any, ...]) -> typing.Any:
        # One hop to aiosqlite's thread instead of three (execute, fetch, close).
        rows = await self.db.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def _all(self, sql: str, params: tuple[typing.Any, ...]) -> list[typing.Any]:
        return list(await self.db.execute_fetchall(sql, params))

    async def _batched(self, write: _BatchedWrite, *args: typing.Any) -> typing.Any:
        """Group commit for the hot writes (proofs, check-ins): `write(conn, *args)` runs in
        aiosqlite's thread in its own savepoint, and every write that arrived while the store
        was busy shares one transaction and one hop to that thread. A burst costs a few
        commits, not one per message; each caller still returns only once its write is
        committed (a PUBACK or a 201 never precedes durability)."""
        future: asyncio.Future[typing.Any] = asyncio.get_running_loop().create_future()
        self._batch.append((write, args, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._batch:
            async with self.write_lock:
                batch = self._batch[:WRITE_BATCH]
                del self._batch[:WRITE_BATCH]
                try:
                    # aiosqlite's own mechanism: the function runs in the connection's
                    # thread, in turn with every other statement of this store.
                    outcomes = await self.db._execute(_run_batch, self.db._conn, batch)
                except Exception as exc:  # the transaction itself failed (disk, I/O)
                    outcomes = [exc] * len(batch)
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # the caller went away; its write stands
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    # -- sites, rooms, devices -------------------------------------------------------------
    @_serialized
    async def add_site(self, site: str, name: str) -> None:
        await self._write("INSERT INTO sites (site, name) VALUES (?, ?)", (site, name))

    @_serialized
    async def add_room(
        self,
        site: str,
        room: str,
        name: str,
        lat: float | None,
        lon: float | None,
        radius_m: float,
    ) -> None:
        if await self._one("SELECT 1 FROM sites WHERE site = ?", (site,)) is None:
            raise store.NotFound(f"site {site} does not exist")
        await self._write(
            "INSERT INTO rooms (site, room, name, lat, lon, radius_m) VALUES (?, ?, ?, ?, ?, ?)",
            (site, room, name, lat, lon, radius_m),
        )

    async def get_room(self, site: str, room: str) -> store.Room | None:
        row = await self._one(
            "SELECT site, room, name, lat, lon, radius_m FROM rooms WHERE site = ? AND room = ?",
            (site, room),
        )
        return store.Room(*row) if row else None

    @_serialized
    async def update_room(
        self, site: str, room: str, lat: float | None, lon: float | None, radius_m: float
    ) -> None:
        changed = await self._write(
            "UPDATE rooms SET lat = ?, lon = ?, radius_m = ? WHERE site = ? AND room = ?",
            (lat, lon, radius_m, site, room),
        )
        if changed != 1:
            raise store.NotFound(f"room {site}/{room} does not exist")

    @_serialized
    async def add_device(
        self, site: str, room: str, device: str, code: str, expires_ms: int
    ) -> None:
        if await self.get_room(site, room) is None:
            raise store.NotFound(f"room {site}/{room} does not exist")
        await self._write(
            "INSERT INTO devices (site, room, device, enroll_code, enroll_expires_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (site, room, device, code, expires_ms),
        )

    async def get_device(self, site: str, device: str) -> store.Device | None:
        row = await self._one(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE site = ? AND device = ?", (site, device)
        )
        return _device(row) if row else None

    async def list_devices(self, site: str | None = None) -> list[store.Device]:
        rows = await self._all(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE ? IS NULL OR site = ?"
            " ORDER BY site, device",
            (site, site),
        )
        return [_device(row) for row in rows]

    async def room_devices(self, site: str, room: str) -> list[store.Device]:
        rows = await self._all(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE site = ? AND room = ? ORDER BY device",
            (site, room),
        )
        return [_device(row) for row in rows]

    @_serialized
    async def bind_device(
        self,
        site: str,
        device: str,
        ed25519: bytes,
        x25519: bytes,
        now_ms: int,
        evidence: str = "",
        note: str = "",
    ) -> None:
        """Bind the keys and burn the code in one transaction: a code works once. The keys
        open the device's key history (from seq 1), with the request as evidence."""
        cursor = await self.db.execute(
            "UPDATE devices SET ed25519 = ?, x25519 = ?, enrolled_at = ?, enroll_code = NULL,"
            " enroll_expires_ms = NULL WHERE site = ? AND device = ? AND enroll_code IS NOT NULL"
            " AND ed25519 IS NULL",
            (ed25519, x25519, now_ms, site, device),
        )
        if cursor.rowcount != 1:
            await self.db.rollback()
            raise store.Conflict(f"device {site}/{device} has no enrollment code to burn")
        await self.db.execute(
            "INSERT INTO device_keys (site, device, room, from_seq, ed25519, x25519, kind,"
            " added_at, evidence, note) SELECT site, device, room, 1, ?, ?, 'enroll', ?, ?, ?"
            " FROM devices WHERE site = ? AND device = ?",
            (ed25519, x25519, now_ms, evidence, note, site, device),
        )
        await self.db.commit()

    async def device_keys(self, site: str, device: str) -> list[store.DeviceKey]:
        rows = await self._all(
            f"SELECT {_KEY_COLUMNS} FROM device_keys WHERE site = ? AND device = ? ORDER BY id",
            (site, device),
        )
        return [_key(row) for row in rows]

    async def device_key_at(self, site: str, device: str, seq: int) -> store.DeviceKey | None:
        row = await self._one(
            f"SELECT {_KEY_COLUMNS} FROM device_keys WHERE site = ? AND device = ?"
            " AND from_seq <= ? ORDER BY from_seq DESC, id DESC LIMIT 1",
            (site, device, seq),
        )
        return _key(row) if row else None

    @_serialized
    async def change_device_keys(
        self, key: store.DeviceKey, previous: bytes, code: str | None
    ) -> None:
        cursor = await self.db.execute(
            "UPDATE devices SET ed25519 = ?, x25519 = ?, room = ?, enroll_code = NULL,"
            " enroll_expires_ms = NULL, enroll_room = NULL WHERE site = ? AND device = ?"
            " AND ed25519 = ? AND last_seq < ? AND (? IS NULL OR enroll_code = ?)",
            (
                key.ed25519,
                key.x25519,
                key.room,
                key.site,
                key.device,
                previous,
                key.from_seq,
                code,
                code,
            ),
        )
        if cursor.rowcount != 1:
            await self.db.rollback()
            raise store.Conflict(f"device {key.site}/{key.device}: key or chain head moved")
        await self.db.execute(
            "INSERT INTO device_keys (site, device, room, from_seq, ed25519, x25519, kind,"
            " added_at, evidence, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            store.device_key_params(key),
        )
        await self.db.commit()

    @_serialized
    async def arm_reenroll(
        self, site: str, device: str, code: str, expires_ms: int, room: str
    ) -> bool:
        changed = await self._write(
            "UPDATE devices SET enroll_code = ?, enroll_expires_ms = ?, enroll_room = ?"
            " WHERE site = ? AND device = ? AND ed25519 IS NOT NULL",
            (code, expires_ms, room, site, device),
        )
        return changed == 1

    async def reenroll_room(self, site: str, device: str) -> str | None:
        row = await self._one(
            "SELECT enroll_room FROM devices WHERE site = ? AND device = ?", (site, device)
        )
        return row[0] if row else None

    @_serialized
    async def revoke_device(self, site: str, device: str) -> bool:
        changed = await self._write(
            "UPDATE devices SET ed25519 = NULL, x25519 = NULL, enroll_code = NULL,"
            " enroll_expires_ms = NULL WHERE site = ? AND device = ?",
            (site, device),
        )
        return changed == 1

    @_serialized
    async def set_online(self, site: str, device: str, online: bool, now_ms: int) -> bool:
        changed = await self._write(
            "UPDATE devices SET online = ?, status_at = ? WHERE site = ? AND device = ?"
            " AND online != ?",
            (int(online), now_ms, site, device, int(online)),
        )
        return changed == 1

    # -- proofs ----------------------------------------------------------------------------
    async def store_proof(
        self,
        row: store.ProofRow,
        slot_s: int,
        otp_step_s: int,
        clock_offset_ms: int,
        otp_digest: str = "sha1",
    ) -> None:
        """Insert the proof and advance the device's chain head in one transaction."""
        await self._batched(_store_proof, row, slot_s, otp_step_s, clock_offset_ms, otp_digest)

    async def proof_hash(self, site: str, device: str, seq: int) -> str | None:
        row = await self._one(
            "SELECT hash FROM proofs WHERE site = ? AND device = ? AND seq = ?", (site, device, seq)
        )
        return row[0] if row else None

    async def get_proof(self, site: str, device: str, seq: int) -> store.ProofRow | None:
        row = await self._one(
            f"SELECT {_PROOF_COLUMNS} FROM proofs WHERE site = ? AND device = ? AND seq = ?",
            (site, device, seq),
        )
        return _proof(row) if row else None

    async def proof_for_slot(self, site: str, device: str, slot: int) -> store.ProofRow | None:
        row = await self._one(
            f"SELECT {_PROOF_COLUMNS} FROM proofs WHERE site = ? AND device = ? AND slot = ?"
            " ORDER BY seq LIMIT 1",
            (site, device, slot),
        )
        return _proof(row) if row else None

    async def list_proofs(
        self, site: str | None, device: str, limit: int, before_seq: int | None = None
    ) -> list[store.ProofRow]:
        rows = await self._all(
            f"SELECT {_PROOF_COLUMNS} FROM proofs WHERE (? IS NULL OR site = ?) AND device = ?"
            " AND (? IS NULL OR seq < ?) ORDER BY seq DESC LIMIT ?",
            (site, site, device, before_seq, before_seq, limit),
        )
        return [_proof(row) for row in rows]

    # -- chain events ----------------------------------------------------------------------
    @_serialized
    async def add_chain_event(
        self, site: str, device: str, kind: str, first: int, last: int, detail: str, now_ms: int
    ) -> store.ChainEvent:
        cursor = await self.db.execute(
            "INSERT INTO chain_events (site, device, kind, first, last, detail, detected_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (site, device, kind, first, last, detail, now_ms),
        )
        await self.db.commit()
        return store.ChainEvent(
            int(cursor.lastrowid or 0), site, device, kind, first, last, detail, now_ms, None
        )

    @_serialized
    async def settle_gaps(self, site: str, device: str, now_ms: int) -> int:
        """Marks gaps whose every seq is now stored as resolved; returns how many stay open."""
        await self._write(
            "UPDATE chain_events SET resolved_at = ? WHERE site = ? AND device = ?"
            " AND kind = 'gap' AND resolved_at IS NULL AND last - first + 1 = (SELECT COUNT(*)"
            " FROM proofs p WHERE p.site = chain_events.site AND p.device = chain_events.device"
            " AND p.seq BETWEEN chain_events.first AND chain_events.last)",
            (now_ms, site, device),
        )
        row = await self._one(
            "SELECT COUNT(*) FROM chain_events WHERE site = ? AND device = ? AND kind = 'gap'"
            " AND resolved_at IS NULL",
            (site, device),
        )
        return int(row[0])

    async def list_chain_events(
        self, site: str | None, device: str | None, limit: int, after_id: int
    ) -> list[store.ChainEvent]:
        rows = await self._all(
            f"SELECT {_CHAIN_COLUMNS} FROM chain_events WHERE (? IS NULL OR site = ?)"
            " AND (? IS NULL OR device = ?) AND id > ? ORDER BY id LIMIT ?",
            (site, site, device, device, after_id, limit),
        )
        return [store.ChainEvent(*row) for row in rows]

    # -- room profiles and alerts ----------------------------------------------------------
    async def get_profile(self, site: str, room: str) -> environment.Profile | None:
        row = await self._one(
            "SELECT site, room, state, wifi, ble, learn_target, learned, counts FROM room_profiles"
            " WHERE site = ? AND room = ?",
            (site, room),
        )
        if row is None:
            return None
        return environment.Profile(
            row[0],
            row[1],
            row[2],
            frozenset(json.loads(row[3])),
            frozenset(json.loads(row[4])),
            row[5],
            row[6],
            json.loads(row[7]),
        )

    @_serialized
    async def save_profile(self, profile: environment.Profile, now_ms: int) -> None:
        await self._write(
            "INSERT INTO room_profiles (site, room, state, wifi, ble, learn_target, learned,"
            " counts, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(site, room) DO UPDATE SET state = excluded.state, wifi = excluded.wifi,"
            " ble = excluded.ble, learn_target = excluded.learn_target,"
            " learned = excluded.learned, counts = excluded.counts,"
            " updated_at = excluded.updated_at",
            (
                profile.site,
                profile.room,
                profile.state,
                json.dumps(sorted(profile.wifi)),
                json.dumps(sorted(profile.ble)),
                profile.learn_target,
                profile.learned,
                json.dumps(profile.counts),
                now_ms,
            ),
        )

    async def list_rooms(self, site: str | None) -> list[store.Room]:
        rows = await self._all(
            "SELECT site, room, name, lat, lon, radius_m FROM rooms WHERE ? IS NULL OR site = ?"
            " ORDER BY site, room",
            (site, site),
        )
        return [store.Room(*row) for row in rows]

    @_serialized
    async def raise_alert(
        self, site: str, device: str, kind: str, reason: str, now_ms: int
    ) -> store.Alert | None:
        """A new open alert, or None when one of that kind is already open."""
        try:
            cursor = await self.db.execute(
                "INSERT INTO alerts (site, device, kind, reason, raised_at) VALUES (?, ?, ?, ?, ?)",
                (site, device, kind, reason[:500], now_ms),
            )
            await self.db.commit()
        except sqlite3.IntegrityError:
            await self.db.rollback()
            return None
        return store.Alert(
            int(cursor.lastrowid or 0), site, device, kind, reason[:500], now_ms, None
        )

    @_serialized
    async def clear_alerts(
        self, site: str, device: str, kind: str, now_ms: int
    ) -> list[store.Alert]:
        rows = await self._all(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE site = ? AND device = ? AND kind = ?"
            " AND cleared_at IS NULL",
            (site, device, kind),
        )
        if rows:
            await self._write(
                "UPDATE alerts SET cleared_at = ? WHERE site = ? AND device = ? AND kind = ?"
                " AND cleared_at IS NULL",
                (now_ms, site, device, kind),
            )
        return [store.Alert(*row[:6], now_ms) for row in rows]

    async def list_alerts(
        self, site: str | None, open_only: bool, limit: int, after_id: int, kind: str | None = None
    ) -> list[store.Alert]:
        rows = await self._all(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE (? IS NULL OR site = ?)"
            " AND (? = 0 OR cleared_at IS NULL) AND (? IS NULL OR kind = ?) AND id > ?"
            " ORDER BY id LIMIT ?",
            (site, site, int(open_only), kind, kind, after_id, limit),
        )
        return [store.Alert(*row) for row in rows]

    @_serialized
    async def clear_alert(self, alert_id: int, now_ms: int) -> store.Alert | None:
        changed = await self._write(
            "UPDATE alerts SET cleared_at = ? WHERE id = ? AND cleared_at IS NULL",
            (now_ms, alert_id),
        )
        row = await self._one(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert_id,))
        return store.Alert(*row) if row and changed else None

    async def silent_devices(self, now_ms: int, grace_ms: int) -> list[store.Device]:
        """Enrolled devices whose last proof is older than 3 slots plus `grace_ms`."""
        rows = await self._all(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE last_proof_at IS NOT NULL"
            " AND last_proof_at + 3 * slot_s * 1000 + ? < ?",
            (grace_ms, now_ms),
        )
        return [_device(row) for row in rows]

    # -- rejections ------------------------------------------------------------------------
    @_serialized
    async def count_rejection(self, reason: str, topic: str, size: int, now_ms: int) -> None:
        await self.db.execute(
            "INSERT INTO rejection_counts (reason, count) VALUES (?, 1)"
            " ON CONFLICT(reason) DO UPDATE SET count = count + 1",
            (reason,),
        )
        await self.db.execute(
            "INSERT INTO rejection_log (at, topic, reason, size) VALUES (?, ?, ?, ?)",
            (now_ms, topic[:256], reason, size),
        )
        await self.db.execute(
            "DELETE FROM rejection_log WHERE id <= (SELECT MAX(id) FROM rejection_log) - ?",
            (RECENT_REJECTIONS,),
        )
        await self.db.commit()

    async def rejections(self) -> tuple[dict[str, int], list[dict[str, typing.Any]]]:
        counts = dict(await self._all("SELECT reason, count FROM rejection_counts", ()))
        recent = [
            {"at": at, "topic": topic, "reason": reason, "size": size}
            for at, topic, reason, size in await self._all(
                "SELECT at, topic, reason, size FROM rejection_log ORDER BY id DESC LIMIT 50", ()
            )
        ]
        return counts, recent

    # -- students, credentials, admin tokens -----------------------------------------------
    @_serialized
    async def add_student(self, site: str, student_id: str, pin_hash: str) -> None:
        if await self._one("SELECT 1 FROM sites WHERE site = ?", (site,)) is None:
            raise store.NotFound(f"site {site} does not exist")
        await self._write(
            "INSERT INTO students (site, student_id, pin_hash) VALUES (?, ?, ?)",
            (site, student_id, pin_hash),
        )

    async def get_student(self, site: str, student_id: str) -> store.Student | None:
        row = await self._one(
            "SELECT site, student_id, pin_hash FROM students WHERE site = ? AND student_id = ?",
            (site, student_id),
        )
        return store.Student(*row) if row else None

    @_serialized
    async def purge_before(self, before_ms: int) -> dict[str, int]:
        try:
            checkins = await self.db.execute(
                "UPDATE checkins SET browser = NULL,"
                " evidence = json_remove(evidence, '$.network', '$.browser_students')"
                " WHERE created_at < ? AND (browser IS NOT NULL"
                " OR json_extract(evidence, '$.network') IS NOT NULL)",
                (before_ms,),
            )
            proofs = await self.db.execute(
                "UPDATE proofs SET jws = '' WHERE received_at < ? AND jws != ''"
                " AND NOT EXISTS (SELECT 1 FROM checkins c WHERE c.site = proofs.site"
                " AND c.device = proofs.device AND c.slot = proofs.slot)",
                (before_ms,),
            )
            await self.db.commit()
        except sqlite3.Error:
            await self.db.rollback()
            raise
        return {"checkins": checkins.rowcount, "proofs": proofs.rowcount}

    @_serialized
    async def erase_student(self, site: str, student_id: str) -> dict[str, int]:
        deleted: dict[str, int] = {}
        statements = [
            (table, sql.format(site=":site", student=":student"))
            for table, sql in store.ERASE_STUDENT
        ]
        try:
            for table, sql in statements:
                cursor = await self.db.execute(sql, {"site": site, "student": student_id})
                deleted[table] = cursor.rowcount
            await self.db.commit()
        except sqlite3.Error:
            await self.db.rollback()
            raise
        return deleted

    @_serialized
    async def add_credential(
        self, credential_id: str, site: str, student_id: str, now_ms: int, expires_ms: int
    ) -> None:
        await self._write(
            "INSERT INTO credentials (id, site, student_id, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (credential_id, site, student_id, now_ms, expires_ms),
        )

    async def credential_active(self, credential_id: str, now_ms: int) -> bool:
        row = await self._one(
            "SELECT 1 FROM credentials WHERE id = ? AND revoked = 0 AND expires_at > ?",
            (credential_id, now_ms),
        )
        return row is not None

    @_serialized
    async def revoke_credential(self, credential_id: str) -> None:
        await self._write("UPDATE credentials SET revoked = 1 WHERE id = ?", (credential_id,))

    @_serialized
    async def add_admin_token(
        self,
        token_hash: str,
        role: str,
        name: str,
        now_ms: int,
        courses: tuple[tuple[str, str], ...] = (),
        site: str | None = None,
    ) -> None:
        try:
            await self.db.execute(
                "INSERT INTO admin_tokens (hash, role, name, created_at, site)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_hash, role, name, now_ms, site),
            )
            await self.db.executemany(
                "INSERT INTO token_courses (hash, site, course) VALUES (?, ?, ?)",
                [(token_hash, site, course) for site, course in sorted(set(courses))],
            )
            await self.db.commit()
        except sqlite3.IntegrityError as exc:
            await self.db.rollback()
            raise store.Conflict(str(exc)) from exc

    async def token_courses(self, token_hash: str) -> frozenset[tuple[str, str]]:
        rows = await self._all(
            "SELECT site, course FROM token_courses WHERE hash = ?", (token_hash,)
        )
        return frozenset((row[0], row[1]) for row in rows)

    @_serialized
    async def audit(
        self,
        actor: str,
        action: str,
        target: str,
        detail: str,
        now_ms: int,
        site: str | None = None,
    ) -> None:
        await self._write(
            "INSERT INTO audit_log (at, actor, action, target, detail, site)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (now_ms, actor[:80], action[:80], target[:200], detail[:1000], site),
        )

    async def list_audit(
        self, limit: int, after_id: int, site: str | None = None
    ) -> list[store.AuditEntry]:
        rows = await self._all(
            "SELECT id, at, actor, action, target, detail, site FROM audit_log WHERE id > ?"
            " AND (? IS NULL OR site = ?) ORDER BY id LIMIT ?",
            (after_id, site, site, limit),
        )
        return [store.AuditEntry(*row) for row in rows]

    async def list_admin_tokens(self, site: str | None = None) -> list[store.AdminToken]:
        rows = await self._all(
            "SELECT hash, role, name, created_at, site FROM admin_tokens"
            " WHERE ? IS NULL OR site = ? ORDER BY created_at, hash",
            (site, site),
        )
        scopes = await self._all("SELECT hash, site, course FROM token_courses", ())
        return store.tokens_with_courses(rows, scopes)

    @_serialized
    async def set_token_site(self, token_id: str, role: str, site: str | None) -> bool:
        changed = await self._write(
            "UPDATE admin_tokens SET role = ?, site = ? WHERE substr(hash, 1, ?) = ?",
            (role, site, store.TOKEN_ID_CHARS, token_id),
        )
        return changed > 0

    @_serialized
    async def revoke_admin_token(self, token_id: str, site: str | None = None) -> bool:
        if len(token_id) != store.TOKEN_ID_CHARS or not all(
            c in "0123456789abcdef" for c in token_id
        ):
            return False
        match = "substr(hash, 1, ?) = ? AND (? IS NULL OR hash IN"
        match += " (SELECT hash FROM admin_tokens WHERE site = ?))"
        await self.db.execute(
            f"DELETE FROM token_courses WHERE {match}",
            (store.TOKEN_ID_CHARS, token_id, site, site),
        )
        changed = await self._write(
            f"DELETE FROM admin_tokens WHERE {match}",
            (store.TOKEN_ID_CHARS, token_id, site, site),
        )
        return changed > 0

    async def admin_role(self, token_hash: str) -> str | None:
        row = await self._one("SELECT role FROM admin_tokens WHERE hash = ?", (token_hash,))
        return row[0] if row else None

    async def admin_grant(self, token_hash: str) -> store.TokenGrant | None:
        row = await self._one("SELECT role, site FROM admin_tokens WHERE hash = ?", (token_hash,))
        return store.TokenGrant(row[0], row[1]) if row else None

    # -- check-ins -------------------------------------------------------------------------
    @_serialized
    async def add_checkin(self, new: store.NewCheckin) -> store.Checkin:
        try:
            cursor = await self.db.execute(_INSERT_CHECKIN, store.checkin_params(new))
            await self.db.commit()
        except sqlite3.IntegrityError as exc:
            await self.db.rollback()
            raise store.Conflict(str(exc)) from exc
        return store.stored_checkin(new, int(cursor.lastrowid or 0))

    async def record_checkin(
        self, context: store.CheckinContext, decide: store.DecideCheckin
    ) -> store.Checkin:
        checkin: store.Checkin = await self._batched(_record_checkin, context, decide)
        return checkin

    async def get_checkin(self, checkin_id: int) -> store.Checkin | None:
        row = await self._one(
            f"SELECT {_CHECKIN_COLUMNS} FROM checkins WHERE id = ?", (checkin_id,)
        )
        return _checkin(row) if row else None

    async def list_checkins(
        self,
        site: str | None,
        room: str | None,
        since_ms: int | None,
        limit: int,
        after_id: int = 0,
        student_id: str | None = None,
        courses: frozenset[tuple[str, str]] | None = None,
    ) -> list[store.Checkin]:
        keys = None if courses is None else json.dumps([f"{s}/{c}" for s, c in courses])
        rows = await self._all(
            f"SELECT {_CHECKIN_COLUMNS} FROM checkins WHERE (? IS NULL OR site = ?)"
            " AND (? IS NULL OR room = ?) AND (? IS NULL OR created_at >= ?)"
            " AND (? IS NULL OR student_id = ?) AND (? IS NULL OR session_id IN (SELECT id"
            " FROM sessions WHERE site || '/' || course IN (SELECT value FROM json_each(?))))"
            " AND id > ? ORDER BY id LIMIT ?",
            (
                *(site, site, room, room, since_ms, since_ms, student_id, student_id),
                *(keys, keys, after_id, limit),
            ),
        )
        return [_checkin(row) for row in rows]

    async def occurrence_checkins(self, session_id: int, session_date: str) -> list[store.Checkin]:
        rows = await self._all(
            f"SELECT {_CHECKIN_COLUMNS} FROM checkins WHERE session_id = ? AND session_date = ?"
            " ORDER BY id",
            (session_id, session_date),
        )
        return [_checkin(row) for row in rows]

    async def browser_students(
        self,
        browser: str,
        student_id: str,
        session_id: int | None,
        session_date: str | None,
        room: str,
        since_ms: int,
    ) -> int:
        """Other students this browser checked in for the same occurrence (or, without a
        session, in the same room since `since_ms`)."""
        row = await self._one(
            _BROWSER_STUDENTS,
            (browser, student_id, session_id, session_id, session_date, session_id, room, since_ms),
        )
        return int(row[0])

    @_serialized
    async def set_checkout(self, checkin_id: int, now_ms: int) -> bool:
        changed = await self._write(
            "UPDATE checkins SET checked_out_at = ? WHERE id = ? AND checked_out_at IS NULL",
            (now_ms, checkin_id),
        )
        return changed == 1

    @_serialized
    async def set_record_jws(self, checkin_id: int, record_jws: str) -> str:
        """Keeps the first countersignature: a record is signed once."""
        await self._write(
            "UPDATE checkins SET record_jws = ? WHERE id = ? AND record_jws IS NULL",
            (record_jws, checkin_id),
        )
        row = await self._one("SELECT record_jws FROM checkins WHERE id = ?", (checkin_id,))
        if row is None:
            raise store.NotFound(f"no check-in {checkin_id}")
        return str(row[0])

    # -- courses, rosters, sessions --------------------------------------------------------
    @_serialized
    async def add_course(self, course: store.Course) -> None:
        if await self._one("SELECT 1 FROM sites WHERE site = ?", (course.site,)) is None:
            raise store.NotFound(f"site {course.site} does not exist")
        await self._write(
            "INSERT INTO courses (site, course, name, timezone) VALUES (?, ?, ?, ?)",
            (course.site, course.course, course.name, course.timezone),
        )

    async def get_course(self, site: str, course: str) -> store.Course | None:
        row = await self._one(
            "SELECT site, course, name, timezone FROM courses WHERE site = ? AND course = ?",
            (site, course),
        )
        return store.Course(*row) if row else None

    async def list_courses(self, site: str | None) -> list[store.Course]:
        rows = await self._all(
            "SELECT site, course, name, timezone FROM courses WHERE ? IS NULL OR site = ?"
            " ORDER BY site, course",
            (site, site),
        )
        return [store.Course(*row) for row in rows]

    @_serialized
    async def set_roster(self, site: str, course: str, students: list[str]) -> None:
        """Replaces the course's roster in one transaction."""
        try:
            await self.db.execute(
                "DELETE FROM enrolments WHERE site = ? AND course = ?", (site, course)
            )
            await self.db.executemany(
                "INSERT INTO enrolments (site, course, student_id) VALUES (?, ?, ?)",
                [(site, course, student) for student in sorted(set(students))],
            )
            await self.db.commit()
        except sqlite3.IntegrityError as exc:
            await self.db.rollback()
            raise store.Conflict(str(exc)) from exc

    async def roster(self, site: str, course: str) -> list[str]:
        rows = await self._all(
            "SELECT student_id FROM enrolments WHERE site = ? AND course = ? ORDER BY student_id",
            (site, course),
        )
        return [row[0] for row in rows]

    async def courses_of(self, site: str, student_id: str) -> list[str]:
        rows = await self._all(
            "SELECT course FROM enrolments WHERE site = ? AND student_id = ? ORDER BY course",
            (site, student_id),
        )
        return [row[0] for row in rows]

    @_serialized
    async def add_session(self, session: timetable.Session) -> timetable.Session:
        try:
            cursor = await self.db.execute(
                "INSERT INTO sessions (site, course, room, timezone, first_date, starts, ends,"
                " weekly, until, grace_min, checkout) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.site,
                    session.course,
                    session.room,
                    session.timezone,
                    session.first_date.isoformat(),
                    session.start.isoformat("minutes"),
                    session.end.isoformat("minutes"),
                    int(session.weekly),
                    session.until.isoformat() if session.until else None,
                    session.grace_min,
                    int(session.checkout),
                ),
            )
            await self.db.commit()
        except sqlite3.IntegrityError as exc:
            await self.db.rollback()
            raise store.NotFound("the course or room does not exist") from exc
        return dataclasses.replace(session, id=int(cursor.lastrowid or 0))

    @_serialized
    async def update_session(self, session: timetable.Session) -> bool:
        try:
            changed = await self._write(
                "UPDATE sessions SET room = ?, timezone = ?, first_date = ?, starts = ?,"
                " ends = ?, weekly = ?, until = ?, grace_min = ?, checkout = ? WHERE id = ?",
                (
                    session.room,
                    session.timezone,
                    session.first_date.isoformat(),
                    session.start.isoformat("minutes"),
                    session.end.isoformat("minutes"),
                    int(session.weekly),
                    session.until.isoformat() if session.until else None,
                    session.grace_min,
                    int(session.checkout),
                    session.id,
                ),
            )
        except store.Conflict as exc:
            raise store.NotFound("the room does not exist") from exc
        return changed > 0

    async def site_exists(self, site: str) -> bool:
        return await self._one("SELECT 1 FROM sites WHERE site = ?", (site,)) is not None

    @_serialized
    async def set_student_pin(self, site: str, student_id: str, pin_hash: str) -> bool:
        try:
            cursor = await self.db.execute(
                "UPDATE students SET pin_hash = ? WHERE site = ? AND student_id = ?",
                (pin_hash, site, student_id),
            )
            changed = cursor.rowcount
            await self.db.execute(
                "UPDATE credentials SET revoked = 1 WHERE site = ? AND student_id = ?",
                (site, student_id),
            )
            await self.db.commit()
        except sqlite3.Error:
            await self.db.rollback()
            raise
        return changed > 0

    @_serialized
    async def update_course(self, course: store.Course) -> bool:
        changed = await self._write(
            "UPDATE courses SET name = ?, timezone = ? WHERE site = ? AND course = ?",
            (course.name, course.timezone, course.site, course.course),
        )
        return changed > 0

    async def get_session(self, session_id: int) -> timetable.Session | None:
        row = await self._one(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
        )
        return _session(row) if row else None

    async def list_sessions(
        self,
        site: str | None,
        course: str | None,
        room: str | None,
        limit: int,
        after_id: int,
    ) -> list[timetable.Session]:
        rows = await self._all(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE (? IS NULL OR site = ?)"
            " AND (? IS NULL OR course = ?) AND (? IS NULL OR room = ?) AND id > ?"
            " ORDER BY id LIMIT ?",
            (site, site, course, course, room, room, after_id, limit),
        )
        return [_session(row) for row in rows]

    @_serialized
    async def set_override(self, override: store.Override) -> None:
        await self._write(
            "INSERT INTO attendance_overrides (session_id, session_date, student_id, status,"
            " note, set_by, set_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(session_id, session_date, student_id) DO UPDATE SET"
            " status = excluded.status, note = excluded.note, set_by = excluded.set_by,"
            " set_at = excluded.set_at",
            (
                override.session_id,
                override.session_date,
                override.student_id,
                override.status,
                override.note,
                override.set_by,
                override.set_at,
            ),
        )

    async def overrides(self, session_id: int, session_date: str) -> list[store.Override]:
        rows = await self._all(
            "SELECT session_id, session_date, student_id, status, note, set_by, set_at"
            " FROM attendance_overrides WHERE session_id = ? AND session_date = ?",
            (session_id, session_date),
        )
        return [store.Override(*row) for row in rows]

    # -- verification links ----------------------------------------------------------------
    @_serialized
    async def add_link(
        self, token_hash: str, checkin_id: int, now_ms: int, expires_ms: int
    ) -> store.VerifyLink:
        if await self._one("SELECT 1 FROM checkins WHERE id = ?", (checkin_id,)) is None:
            raise store.NotFound(f"no check-in {checkin_id}")
        try:
            cursor = await self.db.execute(
                "INSERT INTO verify_links (token_hash, checkin_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (token_hash, checkin_id, now_ms, expires_ms),
            )
            await self.db.commit()
        except sqlite3.IntegrityError as exc:
            await self.db.rollback()
            raise store.Conflict("a link with this token exists") from exc
        return store.VerifyLink(int(cursor.lastrowid or 0), checkin_id, now_ms, expires_ms, None)

    async def find_link(self, token_hash: str) -> store.VerifyLink | None:
        row = await self._one(
            f"SELECT {_LINK_COLUMNS} FROM verify_links WHERE token_hash = ?", (token_hash,)
        )
        return store.VerifyLink(*row) if row else None

    async def get_link(self, link_id: int) -> store.VerifyLink | None:
        row = await self._one(f"SELECT {_LINK_COLUMNS} FROM verify_links WHERE id = ?", (link_id,))
        return store.VerifyLink(*row) if row else None

    @_serialized
    async def revoke_link(self, link_id: int, now_ms: int) -> bool:
        changed = await self._write(
            "UPDATE verify_links SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now_ms, link_id),
        )
        return changed == 1

    # -- webhooks --------------------------------------------------------------------------
    @_serialized
    async def add_webhook(
        self,
        url: str,
        events: tuple[str, ...],
        description: str,
        secret: str,
        now_ms: int,
        site: str | None = None,
    ) -> store.Webhook:
        cursor = await self.db.execute(
            "INSERT INTO webhooks (url, events, description, secret, created_at, site)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (url, json.dumps(list(events)), description, secret, now_ms, site),
        )
        await self.db.commit()
        return store.Webhook(
            int(cursor.lastrowid or 0), url, events, description, secret, now_ms, site
        )

    async def list_webhooks(self, site: str | None = None) -> list[store.Webhook]:
        rows = await self._all(
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE ? IS NULL OR site = ? ORDER BY id",
            (site, site),
        )
        return [
            store.Webhook(r[0], r[1], tuple(json.loads(r[2])), r[3], r[4], r[5], r[6]) for r in rows
        ]

    @_serialized
    async def delete_webhook(self, webhook_id: int) -> bool:
        await self.db.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
        return await self._write("DELETE FROM webhooks WHERE id = ?", (webhook_id,)) == 1

    @_serialized
    async def enqueue_webhook_event(
        self, event_id: str, event_type: str, body: str, now_ms: int, site: str | None = None
    ) -> int:
        return await self._write(
            "INSERT OR IGNORE INTO webhook_deliveries (webhook_id, event_id, event_type, body,"
            " created_at, next_attempt_at) SELECT id, ?, ?, ?, ?, ? FROM webhooks"
            " WHERE EXISTS (SELECT 1 FROM json_each(webhooks.events) WHERE value = ?)"
            " AND (webhooks.site IS NULL OR webhooks.site = ?)",
            (event_id, event_type, body, now_ms, now_ms, event_type, site),
        )

    async def webhooks_due(self, now_ms: int) -> list[int]:
        rows = await self._all(
            "SELECT DISTINCT webhook_id FROM webhook_deliveries WHERE next_attempt_at <= ?"
            " ORDER BY webhook_id",
            (now_ms,),
        )
        return [int(row[0]) for row in rows]

    async def due_webhook_deliveries(
        self, webhook_id: int, now_ms: int, limit: int
    ) -> list[store.WebhookDelivery]:
        rows = await self._all(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE next_attempt_at <= ?"
            " AND webhook_id = ? ORDER BY next_attempt_at, id LIMIT ?",
            (now_ms, webhook_id, limit),
        )
        return [store.WebhookDelivery(*row) for row in rows]

    @_serialized
    async def claim_webhook_delivery(self, delivery_id: int, due_ms: int, until_ms: int) -> bool:
        changed = await self._write(
            "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ?"
            " AND next_attempt_at = ?",
            (until_ms, delivery_id, due_ms),
        )
        return changed == 1

    @_serialized
    async def record_webhook_attempt(
        self,
        delivery_id: int,
        status: int | None,
        error: str | None,
        next_attempt_ms: int | None,
        delivered_ms: int | None,
    ) -> None:
        await self._write(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = ?,"
            " last_error = ?, next_attempt_at = ?, delivered_at = ? WHERE id = ?",
            (status, error[:500] if error else None, next_attempt_ms, delivered_ms, delivery_id),
        )

    async def list_webhook_deliveries(
        self, webhook_id: int, limit: int, after_id: int
    ) -> list[store.WebhookDelivery]:
        rows = await self._all(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = ? AND id > ?"
            " ORDER BY id LIMIT ?",
            (webhook_id, after_id, limit),
        )
        return [store.WebhookDelivery(*row) for row in rows]

    @_serialized
    async def purge_webhook_deliveries(self, before_ms: int) -> int:
        return await self._write(
            "DELETE FROM webhook_deliveries WHERE next_attempt_at IS NULL AND created_at < ?",
            (before_ms,),
        )

    async def webhook_cursor(self, name: str) -> int | None:
        row = await self._one("SELECT value FROM webhook_cursors WHERE name = ?", (name,))
        return int(row[0]) if row else None

    @_serialized
    async def set_webhook_cursor(self, name: str, value: int) -> None:
        await self._write(
            "INSERT INTO webhook_cursors (name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )
