"""The schema histories of the two stores before Alembic, frozen: SQLite versions 1..9 and
PostgreSQL versions 1..6, each as its store ran it. Never edit this file: it is what databases
made by those stores contain. The Alembic baseline runs it to the end, so a new database and
an upgraded old one have exactly the same schema; new changes are Alembic revisions."""

from __future__ import annotations

import typing

import sqlalchemy as sa

SQLITE_FINAL = 9
PG_FINAL = 6

# Upgrades admin tokens, audit entries and webhooks made before sites were sealed (run by
# both histories' last version, after the site columns were added).
SEAL_SITES = """
UPDATE admin_tokens SET site = (SELECT MIN(t.site) FROM token_courses t
    WHERE t.hash = admin_tokens.hash)
    WHERE role = 'teacher' AND site IS NULL AND (SELECT COUNT(DISTINCT t.site)
    FROM token_courses t WHERE t.hash = admin_tokens.hash) = 1;
UPDATE admin_tokens SET role = 'operator'
    WHERE role = 'admin' AND site IS NULL AND (SELECT COUNT(*) FROM sites) = 1;
UPDATE admin_tokens SET site = (SELECT MIN(site) FROM sites)
    WHERE role <> 'operator' AND site IS NULL AND (SELECT COUNT(*) FROM sites) = 1;
UPDATE audit_log SET site = (SELECT MIN(site) FROM sites) WHERE (SELECT COUNT(*) FROM sites) = 1;
UPDATE webhooks SET site = (SELECT MIN(site) FROM sites) WHERE (SELECT COUNT(*) FROM sites) = 1;
"""

# SQLite: version 1 (created when no version is recorded), then one script per version.
SQLITE_V1 = """
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
SQLITE = {
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
    + SEAL_SITES,
}

# PostgreSQL: version 1 is SQLite's schema 4 in PostgreSQL types.
POSTGRES = {
    1: """
CREATE TABLE sites (site TEXT COLLATE "C" PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE rooms (
    site TEXT COLLATE "C" NOT NULL REFERENCES sites(site), room TEXT COLLATE "C" NOT NULL,
    name TEXT NOT NULL, lat DOUBLE PRECISION, lon DOUBLE PRECISION,
    radius_m DOUBLE PRECISION NOT NULL DEFAULT 50, PRIMARY KEY (site, room));
CREATE TABLE devices (
    site TEXT COLLATE "C" NOT NULL, device TEXT COLLATE "C" NOT NULL,
    room TEXT COLLATE "C" NOT NULL, ed25519 BYTEA, x25519 BYTEA, enroll_code TEXT,
    enroll_expires_ms BIGINT, enrolled_at BIGINT, last_seq BIGINT NOT NULL DEFAULT 0,
    last_hash TEXT, last_proof_at BIGINT, last_iat BIGINT, last_slot BIGINT, slot_s INTEGER,
    otp_step_s INTEGER, clock_offset_ms BIGINT, online BOOLEAN NOT NULL DEFAULT FALSE,
    status_at BIGINT, last_verdict TEXT,
    PRIMARY KEY (site, device), FOREIGN KEY (site, room) REFERENCES rooms(site, room));
CREATE TABLE proofs (
    site TEXT COLLATE "C" NOT NULL, device TEXT COLLATE "C" NOT NULL, seq BIGINT NOT NULL,
    slot BIGINT NOT NULL, iat BIGINT NOT NULL, received_at BIGINT NOT NULL, jws TEXT NOT NULL,
    hash TEXT NOT NULL, gap_before BOOLEAN NOT NULL DEFAULT FALSE, verdict TEXT, reasons JSON,
    PRIMARY KEY (site, device, seq));
CREATE INDEX proofs_slot ON proofs (site, device, slot);
CREATE TABLE rejection_counts (reason TEXT PRIMARY KEY, count BIGINT NOT NULL);
CREATE TABLE rejection_log (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, at BIGINT NOT NULL,
    topic TEXT NOT NULL, reason TEXT NOT NULL, size INTEGER NOT NULL);
CREATE TABLE students (
    site TEXT COLLATE "C" NOT NULL REFERENCES sites(site), student_id TEXT COLLATE "C" NOT NULL,
    pin_hash TEXT NOT NULL, PRIMARY KEY (site, student_id));
CREATE TABLE credentials (
    id TEXT PRIMARY KEY, site TEXT COLLATE "C" NOT NULL, student_id TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE);
CREATE TABLE admin_tokens (
    hash TEXT PRIMARY KEY, role TEXT NOT NULL, name TEXT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE checkins (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, site TEXT COLLATE "C" NOT NULL,
    room TEXT COLLATE "C" NOT NULL, device TEXT COLLATE "C" NOT NULL,
    student_id TEXT COLLATE "C" NOT NULL, slot BIGINT NOT NULL, method TEXT NOT NULL,
    created_at BIGINT NOT NULL, token_age_ms BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'present', flags JSON NOT NULL DEFAULT '[]',
    evidence JSON NOT NULL DEFAULT '{}', session_id BIGINT, session_date TEXT,
    checked_out_at BIGINT, record_jws TEXT, browser TEXT,
    UNIQUE (site, student_id, device, slot));
CREATE INDEX checkins_room ON checkins (site, room, created_at);
CREATE INDEX checkins_browser ON checkins (browser, created_at);
CREATE INDEX checkins_student ON checkins (site, student_id, id);
CREATE UNIQUE INDEX checkins_once_per_session ON checkins (session_id, session_date, student_id)
    WHERE session_id IS NOT NULL;
CREATE TABLE room_profiles (
    site TEXT COLLATE "C" NOT NULL, room TEXT COLLATE "C" NOT NULL, state TEXT NOT NULL,
    wifi JSON NOT NULL, ble JSON NOT NULL, learn_target INTEGER NOT NULL,
    learned INTEGER NOT NULL, counts JSON NOT NULL, updated_at BIGINT NOT NULL,
    PRIMARY KEY (site, room));
CREATE TABLE alerts (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, site TEXT COLLATE "C" NOT NULL,
    device TEXT COLLATE "C" NOT NULL, kind TEXT NOT NULL, reason TEXT NOT NULL,
    raised_at BIGINT NOT NULL, cleared_at BIGINT);
CREATE UNIQUE INDEX alerts_open ON alerts (site, device, kind) WHERE cleared_at IS NULL;
CREATE TABLE chain_events (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, site TEXT COLLATE "C" NOT NULL,
    device TEXT COLLATE "C" NOT NULL, kind TEXT NOT NULL, "first" BIGINT NOT NULL,
    "last" BIGINT NOT NULL, detail TEXT NOT NULL, detected_at BIGINT NOT NULL,
    resolved_at BIGINT);
CREATE INDEX chain_events_device ON chain_events (site, device, kind, resolved_at);
CREATE TABLE courses (
    site TEXT COLLATE "C" NOT NULL REFERENCES sites(site), course TEXT COLLATE "C" NOT NULL,
    name TEXT NOT NULL, timezone TEXT NOT NULL, PRIMARY KEY (site, course));
CREATE TABLE enrolments (
    site TEXT COLLATE "C" NOT NULL, course TEXT COLLATE "C" NOT NULL,
    student_id TEXT COLLATE "C" NOT NULL, PRIMARY KEY (site, course, student_id),
    FOREIGN KEY (site, course) REFERENCES courses(site, course));
CREATE INDEX enrolments_student ON enrolments (site, student_id);
CREATE TABLE sessions (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, site TEXT COLLATE "C" NOT NULL,
    course TEXT COLLATE "C" NOT NULL, room TEXT COLLATE "C" NOT NULL, timezone TEXT NOT NULL,
    first_date DATE NOT NULL, starts TIME NOT NULL, ends TIME NOT NULL,
    weekly BOOLEAN NOT NULL, until DATE, grace_min INTEGER NOT NULL, checkout BOOLEAN NOT NULL,
    FOREIGN KEY (site, course) REFERENCES courses(site, course),
    FOREIGN KEY (site, room) REFERENCES rooms(site, room));
CREATE INDEX sessions_room ON sessions (site, room);
CREATE TABLE attendance_overrides (
    session_id BIGINT NOT NULL REFERENCES sessions(id), session_date TEXT NOT NULL,
    student_id TEXT COLLATE "C" NOT NULL, status TEXT NOT NULL, note TEXT NOT NULL,
    set_by TEXT NOT NULL, set_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, session_date, student_id));
CREATE TABLE verify_links (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
    checkin_id BIGINT NOT NULL REFERENCES checkins(id), created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL, revoked_at BIGINT);
""",
    2: """
CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, detail TEXT NOT NULL);
""",
    3: """
CREATE TABLE token_courses (
    hash TEXT NOT NULL REFERENCES admin_tokens(hash) ON DELETE CASCADE,
    site TEXT COLLATE "C" NOT NULL, course TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (hash, site, course));
""",
    4: """
ALTER TABLE devices ADD COLUMN enroll_room TEXT COLLATE "C";
CREATE TABLE device_keys (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, site TEXT COLLATE "C" NOT NULL,
    device TEXT COLLATE "C" NOT NULL, room TEXT COLLATE "C" NOT NULL, from_seq BIGINT NOT NULL,
    ed25519 BYTEA NOT NULL, x25519 BYTEA NOT NULL, kind TEXT NOT NULL, added_at BIGINT NOT NULL,
    evidence TEXT NOT NULL DEFAULT '');
CREATE INDEX device_keys_device ON device_keys (site, device, from_seq);
INSERT INTO device_keys (site, device, room, from_seq, ed25519, x25519, kind, added_at)
    SELECT site, device, room, 1, ed25519, x25519, 'enroll', COALESCE(enrolled_at, 0)
    FROM devices WHERE ed25519 IS NOT NULL AND x25519 IS NOT NULL;
""",
    5: """
CREATE TABLE webhooks (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, url TEXT NOT NULL,
    events TEXT[] NOT NULL, description TEXT NOT NULL, secret TEXT NOT NULL,
    created_at BIGINT NOT NULL);
CREATE TABLE webhook_deliveries (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    webhook_id BIGINT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id TEXT NOT NULL, event_type TEXT NOT NULL, body TEXT NOT NULL,
    created_at BIGINT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_status INTEGER,
    last_error TEXT, next_attempt_at BIGINT, delivered_at BIGINT,
    UNIQUE (webhook_id, event_id));
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE TABLE webhook_cursors (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
""",
    6: """
ALTER TABLE admin_tokens ADD COLUMN site TEXT COLLATE "C";
ALTER TABLE audit_log ADD COLUMN site TEXT COLLATE "C";
ALTER TABLE webhooks ADD COLUMN site TEXT COLLATE "C";
CREATE INDEX audit_log_site ON audit_log (site, id);
"""
    + SEAL_SITES,
}


def _run(conn: sa.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            conn.exec_driver_sql(statement)


def version(conn: sa.Connection) -> int | None:
    """The version an old store recorded; None when the database has no version table."""
    if not sa.inspect(conn).has_table("schema_version"):
        return None
    recorded = conn.exec_driver_sql("SELECT MAX(version) FROM schema_version").scalar()
    if recorded is None:  # SQLite wrote its first row after creating the table
        return 1 if conn.dialect.name == "sqlite" else 0
    return int(recorded)


def _record(conn: sa.Connection, target: int) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("DELETE FROM schema_version")
        conn.exec_driver_sql("INSERT INTO schema_version VALUES (?)", (target,))
    else:  # applied_at was informative only; nothing reads it
        conn.exec_driver_sql(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, 0)", (target,)
        )


def upgrade(conn: sa.Connection, target: int | None = None) -> None:
    """Brings an empty database, or one an old store made, to `target` (default: the last
    version) the way the old stores did. At the last version the version table goes:
    Alembic's alembic_version records everything after it. Raises RuntimeError for a
    database newer than the last version."""
    sqlite = conn.dialect.name == "sqlite"
    final = SQLITE_FINAL if sqlite else PG_FINAL
    scripts: typing.Mapping[int, str] = SQLITE if sqlite else POSTGRES
    target = final if target is None else target
    current = version(conn)
    if current is not None and current > final:
        raise RuntimeError(f"database schema {current} is newer than this central ({final})")
    if current is None and sqlite:
        _run(conn, SQLITE_V1)
        current = 1
        _record(conn, current)
    elif current is None:
        conn.exec_driver_sql(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
        )
        current = 0
    for step in range(current + 1, target + 1):
        _run(conn, scripts[step])
        _record(conn, step)
    if target == final:
        conn.exec_driver_sql("DROP TABLE schema_version")
