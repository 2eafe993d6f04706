"""What PostgreSQL adds over the contract: several writers at once on one pool, migrations
that two centrals starting together do not race, clear failures, and the store chosen by
`database_url`."""

from __future__ import annotations

import asyncio
import collections.abc
import pathlib
import subprocess
import sys

import asyncpg
import pydantic
import pytest
from sqlalchemy.ext import asyncio as sa_asyncio

from central.core import settings as settings_mod
from central.storage import database
from central.storage import migrations
from central.storage import store
from central.storage import stores
from tests import broker as broker_mod
from tests.stores import pg as pg_mod
from tests.stores import test_contract

SITE, ROOM, DEVICE = test_contract.SITE, test_contract.ROOM, test_contract.DEVICE


@pytest.fixture()
async def pg(pg_dsn: str) -> collections.abc.AsyncIterator[database.Database]:
    db = database.Database.postgres(pg_dsn)
    await db.open()
    yield db
    await db.close()


async def test_centrals_starting_together_migrate_once(pg_dsn: str) -> None:
    handles = [database.Database.postgres(pg_dsn) for _ in range(6)]
    await asyncio.gather(*(handle.open() for handle in handles))
    try:
        connection = await asyncpg.connect(pg_dsn)
        try:
            versions = [r[0] for r in await connection.fetch("SELECT * FROM alembic_version")]
        finally:
            await connection.close()
        assert versions == [migrations.head()]
        await handles[0].add_site(SITE, "Main campus")
        assert await handles[5].list_rooms(SITE) == []
    finally:
        for handle in handles:
            await handle.close()


async def test_a_newer_schema_is_refused(pg_dsn: str) -> None:
    db = database.Database.postgres(pg_dsn)
    await db.open()
    await db.close()
    connection = await asyncpg.connect(pg_dsn)
    try:
        await connection.execute("UPDATE alembic_version SET version_num = '99'")
    finally:
        await connection.close()
    newer = database.Database.postgres(pg_dsn)
    with pytest.raises(RuntimeError, match="schema 99 is newer"):
        await newer.open()
    with pytest.raises(RuntimeError, match="not open"):
        await newer.get_room(SITE, ROOM)


async def test_links_name_the_missing_checkin(pg: database.Database) -> None:
    await test_contract.provision(pg)
    with pytest.raises(store.NotFound):
        await pg.add_link("t" * 64, 12345, 100, 1_000)
    checkin = await pg.add_checkin(test_contract.new_checkin("s1", 10))
    await pg.add_link("t" * 64, checkin.id, 100, 1_000)
    with pytest.raises(store.Conflict):
        await pg.add_link("t" * 64, checkin.id, 100, 1_000)
    with pytest.raises(store.NotFound):
        await pg.set_record_jws(checkin.id + 100, "record")


async def test_an_unreachable_server_is_a_connection_error() -> None:
    port = broker_mod.free_port()
    db = database.Database.postgres(f"postgresql://roomproof:s3cret@127.0.0.1:{port}/central")
    with pytest.raises(ConnectionError) as raised:
        await db.open()
    message = str(raised.value)
    assert f"postgresql://roomproof:***@127.0.0.1:{port}/central" in message
    assert "s3cret" not in message


def test_the_cli_reports_a_missing_database_in_one_line(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "central.toml"
    missing = f"{pg_mod.SERVER}/roomproof_t_does_not_exist"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\ndatabase_url = "{missing}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "central", "site", "add", "--site", "x", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: database ") and "roomproof_t_does_not_exist" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_the_store_follows_database_url(tmp_path: pathlib.Path) -> None:
    sqlite = stores.make(settings_mod.CentralSettings(data_dir=tmp_path))
    assert isinstance(sqlite, database.Database)
    assert sqlite.path == tmp_path / "central.db"
    for url in ("postgresql://central@db.example.edu:5432/roomproof", "postgres://db/x"):
        chosen = stores.make(settings_mod.CentralSettings(data_dir=tmp_path, database_url=url))
        assert isinstance(chosen, database.Database) and chosen.dsn == url
    with pytest.raises(pydantic.ValidationError):
        settings_mod.CentralSettings(database_url="mysql://db/x")


def test_a_connection_terminated_mid_query_is_an_outage_on_the_hot_path() -> None:
    """The prepared statements (ingest, check-in) run on the DBAPI cursor, so a connection the
    server terminated mid-operation arrives as the asyncpg adapter's InternalClientError
    ("cannot switch to state ..."), not wrapped by SQLAlchemy: still an outage (503, retry),
    never an internal error that rejects the proof."""
    adapter = sa_asyncio.create_async_engine("postgresql+asyncpg://u@127.0.0.1/db").dialect
    dbapi = adapter.loaded_dbapi
    driver = asyncpg.InternalClientError(
        "cannot switch to state 12; another operation is in progress"
    )
    with pytest.raises(dbapi.InternalClientError) as raised:
        raise dbapi.InternalClientError("cannot switch to state 12") from driver
    assert stores.is_outage(raised.value)
    assert not stores.is_outage(dbapi.InternalClientError("no driver error under it"))
