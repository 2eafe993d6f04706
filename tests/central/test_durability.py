"""Durable answers and honest outages: a 201 or a PUBACK follows an fsync; a full disk or a
database that refuses connections answers 503 `store_unavailable` with Retry-After, /healthz
says so, and each part of central logs the outage once, not once per request or retry."""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import logging
import os
import pathlib
import subprocess
import typing

import aiohttp
import pytest
import sqlalchemy
from aiohttp import test_utils

from central import app as app_mod
from central.core import settings as settings_mod
from central.storage import database
from tests.central import conftest
from tests.central import test_checkins
from tests.stores import pg

OUTAGE_S = 6  # long enough for main's once-a-second retries to log several times


def _pragma(conn: sqlalchemy.Connection, name: str) -> tuple[typing.Any, ...]:
    """A PRAGMA as the store's own connection has it (the setting is per connection)."""
    return tuple(conn.exec_driver_sql(f"PRAGMA {name}").one())


async def test_sqlite_store_fsyncs_every_commit(tmp_path: pathlib.Path) -> None:
    """central's own connection runs WAL with synchronous=FULL (2): each group commit, and so
    each 201 and each PUBACK after it, waits for an fsync. NORMAL (1) survives a SIGKILL only."""
    db = database.Database.sqlite(tmp_path / "central.sqlite3")
    await db.open()
    try:
        assert (await db.engine.read(_pragma, "journal_mode")) == ("wal",)
        assert (await db.engine.read(_pragma, "synchronous")) == (2,)
    finally:
        await db.close()


async def test_postgres_without_synchronous_commit_is_refused() -> None:
    async with pg.fresh_database() as dsn:
        db = database.Database.postgres(f"{dsn}?synchronous_commit=off")
        with pytest.raises(RuntimeError, match="synchronous_commit is off"):
            await db.open()
        db = database.Database.postgres(dsn)  # the server's default (on) opens
        await db.open()
        await db.close()


async def test_healthz_reports_a_broker_outage_without_failing(tmp_path: pathlib.Path) -> None:
    """No broker: /healthz is 200 (check-ins still work) and names the broker and the store."""
    port = conftest.broker_mod.free_port()
    settings = settings_mod.CentralSettings(
        data_dir=tmp_path / "central",
        http_host="127.0.0.1",
        http_port=port,
        public_url=f"http://127.0.0.1:{port}",
        mqtt_url=f"mqtt://127.0.0.1:{conftest.broker_mod.free_port()}",  # nobody listens
        allow_anonymous_broker=True,
    )
    server = test_utils.TestServer(app_mod.build(settings), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
                assert await response.json() == {
                    "status": "ok",
                    "store": "ok",
                    "mqtt": "disconnected",
                }
    finally:
        await server.close()


# -- a full disk under central's SQLite store ---------------------------------------------


@pytest.fixture()
def small_disk(tmp_path: pathlib.Path) -> collections.abc.Iterator[pathlib.Path]:
    """central's data_dir on a 4 MB tmpfs (needs root), unmounted afterwards."""
    path = tmp_path / "central"  # the central fixture's data_dir
    path.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture()
def central_overrides(small_disk: pathlib.Path) -> dict[str, typing.Any]:
    if os.environ.get("ROOMPROOF_DATABASE_URL"):
        pytest.skip("the full-disk test is about the SQLite store")
    return {}


def fill(path: pathlib.Path) -> None:
    """Write until the filesystem says ENOSPC."""
    with path.open("wb") as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
                out.flush()
                os.fsync(out.fileno())


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_full_disk_answers_503_and_logs_once(
    enrolled: tuple[conftest.Central, conftest.ScriptedDevice],
    small_disk: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    central, device = enrolled
    caplog.set_level(logging.INFO)
    await central.add_student("s1", "1234")
    filler = small_disk / "filler"
    fill(filler)

    slot = await test_checkins.slot_with_time_left(12)
    for _ in range(5):
        central.new_phone()
        async with central.http.post(
            central.url + "/api/v1/checkins",
            json={
                "token": test_checkins.url(central, device, slot),
                "student_id": "s1",
                "pin": "1234",
            },
        ) as response:
            assert response.status == 503, await response.text()
            assert response.headers["Retry-After"].isdigit()
            assert (await response.json())["error"]["code"] == "store_unavailable"
    # A proof cannot be stored either: the bridge does not acknowledge it, reconnects and
    # gets it again, backing off.
    await central.publish(device.topic("proof"), device.next_proof())
    async with central.http.get(central.url + "/healthz") as response:
        assert response.status == 503
        assert response.headers["Retry-After"].isdigit()
        health = await response.json()
        assert (health["status"], health["store"]) == ("unavailable", "unavailable")
    await asyncio.sleep(OUTAGE_S)
    assert not lines(caplog, "internal error"), "an outage is not an internal error"
    assert not [r for r in caplog.records if r.exc_info], "no traceback for an outage"
    down = lines(caplog, "store unavailable")
    assert len(down) == 1, f"one line per state change, not per request or retry: {down}"

    filler.unlink()

    async def healthy() -> bool:
        async with central.http.get(central.url + "/healthz") as response:
            return response.status == 200

    await conftest.poll(healthy, 60, "the bridge to store the proof and /healthz to recover")
    assert await central.stored_seqs(device.device) == [1, 2]
    assert len(lines(caplog, "store available again")) == 1
    assert len(lines(caplog, "store unavailable")) == 1
