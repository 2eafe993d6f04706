"""A database made by the last central before Alembic (main at 5d744fc, the fixtures in
legacy/, made by legacy/make_fixtures.py from that commit's own stores) opens without a manual
step: it is upgraded in place, and every read of the Store API returns what that central
read back, on SQLite and on PostgreSQL. New databases get the same schema as upgraded ones."""

from __future__ import annotations

import asyncio
import json
import pathlib
import sqlite3
import typing

import sqlalchemy as sa
from alembic import autogenerate
from alembic.runtime import migration

from central.storage import database
from central.storage import migrations
from central.storage import schema
from central.storage import store
from tests.stores import conftest
from tests.stores import pg
from tests.stores.legacy import data

LEGACY = pathlib.Path(__file__).resolve().parent / "legacy"


async def _restore(backend: conftest.Backend, db: database.Database) -> None:
    """Loads main's dump into the test's empty database."""
    if db.path is not None:
        with sqlite3.connect(db.path) as raw:
            raw.executescript((LEGACY / "main-sqlite.sql").read_text())
        return
    assert db.dsn is not None
    psql = await asyncio.create_subprocess_exec(
        *("psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(LEGACY / "main-postgres.sql"), db.dsn),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await psql.communicate()
    assert psql.returncode == 0, output.decode()


def _expected(backend: conftest.Backend) -> typing.Any:
    """What main read back, with what the revisions after the baseline add: devices' TOTP
    digest (none declared: null) and key-history notes, and the first key's evidence
    backfilled with the earliest stored proof its key signed (revision 0002)."""
    reads = json.loads((LEGACY / f"main-reads-{backend.name}.json").read_text())
    for name in ("device", "devices", "room_devices", "silent_devices"):
        for device in reads[name] if isinstance(reads[name], list) else [reads[name]]:
            device["otp_digest"] = None
    history = reads["device_keys"]
    for key in [*history, reads["device_key_at_5"], reads["device_key_at_6"]]:
        key["note"] = ""
        if key["kind"] == "enroll" and key["evidence"] == "":
            ends = min(
                (k["from_seq"] for k in history if k["from_seq"] > key["from_seq"]), default=2**53
            )
            signed = sorted(
                (p["seq"], p["jws"])
                for p in reads["proofs"]
                if p["device"] == key["device"] and key["from_seq"] <= p["seq"] < ends and p["jws"]
            )
            key["evidence"] = signed[0][1] if signed else ""
            key["note"] = store.NOTE_BACKFILL_PROOF if signed else store.NOTE_BACKFILL_NONE
    return reads


async def _tables(db: database.Database) -> set[str]:
    def names(conn: sa.Connection) -> set[str]:
        return set(sa.inspect(conn).get_table_names())

    return await db.engine.read(names)


async def test_a_database_made_by_main_upgrades_in_place(backend: conftest.Backend) -> None:
    db = backend.make()
    assert isinstance(db, database.Database)
    await _restore(backend, db)
    await db.open()
    try:
        found = await data.reads(db)
        tables = await _tables(db)
        version = await db.engine.read(migrations.current)
        # the upgraded database takes new rows after the old ones
        (last,) = (await db.list_checkins(None, None, None, 1, 1))[-1:]
        more = await db.add_checkin(
            store.NewCheckin(
                data.SITE, data.ROOM, data.DEVICE, "s9", 300, "qr", 20_000, 100, "present",
                (), {}, None, None, None,
            )
        )  # fmt: skip
    finally:
        await db.close()
    assert found == _expected(backend)
    assert "schema_version" not in tables and "alembic_version" in tables
    assert version == migrations.head()
    assert more.id == last.id + 1


async def test_opening_again_changes_nothing(backend: conftest.Backend) -> None:
    db = backend.make()
    assert isinstance(db, database.Database)
    await _restore(backend, db)
    await db.open()
    await db.close()
    await db.open()
    try:
        assert await data.reads(db) == _expected(backend)
    finally:
        await db.close()


def _differences(conn: sa.Connection) -> list[typing.Any]:
    context = migration.MigrationContext.configure(conn, opts={"compare_type": False})
    return [
        diff
        for diff in autogenerate.compare_metadata(context, schema.metadata)
        if diff[0] in ("add_table", "remove_table", "add_column", "remove_column")
        and not (diff[0] == "remove_table" and diff[1].name == "alembic_version")
    ]


async def test_schema_py_declares_what_the_migrations_make(db: database.Database) -> None:
    """Every table and column the queries name exists in a migrated database, and the
    database has none that schema.py leaves out."""
    assert isinstance(db, database.Database)
    assert await db.engine.read(_differences) == []


async def test_new_and_upgraded_databases_have_the_same_schema(
    backend: conftest.Backend, tmp_path: pathlib.Path
) -> None:
    upgraded = backend.make()
    assert isinstance(upgraded, database.Database)
    await _restore(backend, upgraded)
    await upgraded.open()
    try:
        old = await upgraded.engine.read(_ddl)
    finally:
        await upgraded.close()
    if backend.name == "sqlite":
        new = database.Database.sqlite(tmp_path / "new.db")
        await new.open()
        try:
            assert await new.engine.read(_ddl) == old
        finally:
            await new.close()
        return
    async with pg.fresh_database() as dsn:
        new = database.Database.postgres(dsn)
        await new.open()
        try:
            assert await new.engine.read(_ddl) == old
        finally:
            await new.close()


def _ddl(conn: sa.Connection) -> dict[str, typing.Any]:
    """Tables, columns (name, type, nullability, default), indexes and keys, by name."""
    inspector = sa.inspect(conn)
    found: dict[str, typing.Any] = {}
    for table in sorted(inspector.get_table_names()):
        found[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in inspector.get_columns(table)
            ],
            "indexes": sorted(
                (i["name"] or "", tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
            ),
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": sorted(
                (tuple(k["constrained_columns"]), k["referred_table"])
                for k in inspector.get_foreign_keys(table)
            ),
        }
    return found
