"""The tables as the queries see them: one MetaData for both engines.

The DDL itself lives in the migrations (the baseline runs the frozen legacy scripts; later
revisions use Alembic operations), so these declarations carry what the queries need: names,
and types that turn values into Python ones the same way on both engines (a JSON column is a
`list` or `dict`, a flag a `bool`, a session's days and times `datetime.date`/`time`).
`tests/stores/test_schema.py` checks that a migrated database has every table and column
declared here.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite

metadata = sa.MetaData()

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: the rowid alias
Int = sa.BigInteger
Flag = sa.Boolean(create_constraint=False)  # SQLite: 0/1 integers
Json = sa.JSON(none_as_null=True)  # SQLite: JSON text; PostgreSQL: json (kept verbatim)
# SQLite: a JSON list in text; PostgreSQL: text[].
TextList = sa.JSON(none_as_null=True).with_variant(postgresql.ARRAY(sa.Text()), "postgresql")
# SQLite: "HH:MM" text, as the old store wrote it; PostgreSQL: time.
Minutes = sa.Time().with_variant(
    sqlite.TIME(  # type: ignore[no-untyped-call]
        storage_format="%(hour)02d:%(minute)02d", regexp=r"(\d+):(\d+)"
    ),
    "sqlite",
)


def _pk_id() -> sa.Column[int]:
    return sa.Column("id", Id, primary_key=True, autoincrement=True)


sites = sa.Table(
    "sites", metadata, sa.Column("site", sa.Text, primary_key=True), sa.Column("name", sa.Text)
)
rooms = sa.Table(
    "rooms",
    metadata,
    sa.Column("site", sa.Text, primary_key=True),
    sa.Column("room", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("lat", sa.Float),
    sa.Column("lon", sa.Float),
    sa.Column("radius_m", sa.Float, nullable=False),
)
devices = sa.Table(
    "devices",
    metadata,
    sa.Column("site", sa.Text, primary_key=True),
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("room", sa.Text, nullable=False),
    sa.Column("ed25519", sa.LargeBinary),
    sa.Column("x25519", sa.LargeBinary),
    sa.Column("enroll_code", sa.Text),
    sa.Column("enroll_expires_ms", Int),
    sa.Column("enrolled_at", Int),
    sa.Column("last_seq", Int, nullable=False),
    sa.Column("last_hash", sa.Text),
    sa.Column("last_proof_at", Int),
    sa.Column("last_iat", Int),
    sa.Column("last_slot", Int),
    sa.Column("slot_s", sa.Integer),
    sa.Column("otp_step_s", sa.Integer),
    sa.Column("clock_offset_ms", Int),
    sa.Column("online", Flag, nullable=False),
    sa.Column("status_at", Int),
    sa.Column("last_verdict", sa.Text),
    sa.Column("enroll_room", sa.Text),
    sa.Column("otp_digest", sa.Text),  # from the last proof; NULL: sha1 (revision 0002)
)
proofs = sa.Table(
    "proofs",
    metadata,
    sa.Column("site", sa.Text, primary_key=True),
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("seq", Int, primary_key=True),
    sa.Column("slot", Int, nullable=False),
    sa.Column("iat", Int, nullable=False),
    sa.Column("received_at", Int, nullable=False),
    sa.Column("jws", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Column("gap_before", Flag, nullable=False),
    sa.Column("verdict", sa.Text),
    sa.Column("reasons", Json),
)
rejection_counts = sa.Table(
    "rejection_counts",
    metadata,
    sa.Column("reason", sa.Text, primary_key=True),
    sa.Column("count", Int, nullable=False),
)
rejection_log = sa.Table(
    "rejection_log",
    metadata,
    _pk_id(),
    sa.Column("at", Int, nullable=False),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
)
students = sa.Table(
    "students",
    metadata,
    sa.Column("site", sa.Text, primary_key=True),
    sa.Column("student_id", sa.Text, primary_key=True),
    sa.Column("pin_hash", sa.Text, nullable=False),
)
credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("site", sa.Text, nullable=False),
    sa.Column("student_id", sa.Text, nullable=False),
    sa.Column("created_at", Int, nullable=False),
    sa.Column("expires_at", Int, nullable=False),
    sa.Column("revoked", Flag, nullable=False),
)
admin_tokens = sa.Table(
    "admin_tokens",
    metadata,
    sa.Column("hash", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", Int, nullable=False),
    sa.Column("site", sa.Text),
)
token_courses = sa.Table(
    "token_courses",
    metadata,
    sa.Column("hash", sa.Text, primary_key=True),
    sa.Column("site", sa.Text, primary_key=True),
    sa.Column("course", sa.Text, primary_key=True),
)
checkins = sa.Table(
    "checkins",
    metadata,
    _pk_id(),
    sa.Column("site", sa.Text, nullable=False),
    sa.Column("room", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("student_id", sa.Text, nullable=False),
    sa.Column("slot", Int, nullable=False),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("created_at", Int, nullable=False),
    sa.Column("token_age_ms", Int, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("flags", Json, nullable=False),
    sa.Column("evidence", Json, nullable=False),
    sa.Column("session_id", Int),
    sa.Column("session_date", sa.Text),
    sa.Column("checked_out_at", Int),
    sa.Column("record_jws", sa.Text),
    sa.Column("browser", sa.Text),
)
room_profiles = sa.Table(
    "room_profiles",
    metadata,
    sa.Column("site", sa.Text, primary_key=True),
    sa.Column("room", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("wifi", Json, nullable=False),
    sa.Column("ble", Json, nullable=False),
    sa.Column("learn_target", sa.Integer, nullable=False),
    sa.Column("learned", sa.Integer, nullable=False),
    sa.Column("counts", Json, nullable=False),
    sa.Column("updated_at", Int, nullable=False),
)
alerts = sa.Table(
    "alerts",
    metadata,
    _pk_id(),
    sa.Column("site", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("raised_at", Int, nullable=False),
    sa.Column("cleared_at", Int),
)
chain_events = sa.Table(
    "chain_events",
    metadata,
    _pk_id(),
    sa.Column("site", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("first", Int, nullable=False),
    sa.Column("last", Int, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("detected_at", Int, nullable=False),
    sa.Column("resolved_at", Int),
)
courses = sa.Table(
    "courses",
    metadata,
    sa.Column("site", sa.Text, primary_key=True),
    sa.Column("course", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("timezone", sa.Text, nullable=False),
)
enrolments = sa.Table(
    "enrolments",
    metadata,
    sa.Column("site", sa.Text, primary_key=True),
    sa.Column("course", sa.Text, primary_key=True),
    sa.Column("student_id", sa.Text, primary_key=True),
)
sessions = sa.Table(
    "sessions",
    metadata,
    _pk_id(),
    sa.Column("site", sa.Text, nullable=False),
    sa.Column("course", sa.Text, nullable=False),
    sa.Column("room", sa.Text, nullable=False),
    sa.Column("timezone", sa.Text, nullable=False),
    sa.Column("first_date", sa.Date, nullable=False),
    sa.Column("starts", Minutes, nullable=False),
    sa.Column("ends", Minutes, nullable=False),
    sa.Column("weekly", Flag, nullable=False),
    sa.Column("until", sa.Date),
    sa.Column("grace_min", sa.Integer, nullable=False),
    sa.Column("checkout", Flag, nullable=False),
)
attendance_overrides = sa.Table(
    "attendance_overrides",
    metadata,
    sa.Column("session_id", Int, primary_key=True),
    sa.Column("session_date", sa.Text, primary_key=True),
    sa.Column("student_id", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("set_by", sa.Text, nullable=False),
    sa.Column("set_at", Int, nullable=False),
)
verify_links = sa.Table(
    "verify_links",
    metadata,
    _pk_id(),
    sa.Column("token_hash", sa.Text, nullable=False),
    sa.Column("checkin_id", Int, nullable=False),
    sa.Column("created_at", Int, nullable=False),
    sa.Column("expires_at", Int, nullable=False),
    sa.Column("revoked_at", Int),
)
audit_log = sa.Table(
    "audit_log",
    metadata,
    _pk_id(),
    sa.Column("at", Int, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("site", sa.Text),
)
device_keys = sa.Table(
    "device_keys",
    metadata,
    _pk_id(),
    sa.Column("site", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("room", sa.Text, nullable=False),
    sa.Column("from_seq", Int, nullable=False),
    sa.Column("ed25519", sa.LargeBinary, nullable=False),
    sa.Column("x25519", sa.LargeBinary, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("added_at", Int, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),  # revision 0002
)
webhooks = sa.Table(
    "webhooks",
    metadata,
    _pk_id(),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("events", TextList, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created_at", Int, nullable=False),
    sa.Column("site", sa.Text),
)
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    _pk_id(),
    sa.Column("webhook_id", Int, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", Int, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_status", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", Int),
    sa.Column("delivered_at", Int),
)
webhook_cursors = sa.Table(
    "webhook_cursors",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", Int, nullable=False),
)
