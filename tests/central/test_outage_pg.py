"""A PostgreSQL database that refuses connections (the machine's server keeps running: only
the test's own database stops accepting them): every API route answers 503
`store_unavailable` with Retry-After, /healthz says the store is down, and the webhook
dispatcher and the bridge back off and log the outage once, not once per second."""

from __future__ import annotations

import asyncio
import collections.abc
import logging
import typing

import asyncpg
import pytest

from tests.central import conftest
from tests.stores import pg

OUTAGE_S = 6  # main's dispatcher logged a traceback per second, its bridge reconnected as often


@pytest.fixture()
async def central_overrides() -> collections.abc.AsyncIterator[dict[str, typing.Any]]:
    async with pg.fresh_database() as dsn:
        yield {"database_url": dsn, "webhook_poll_s": 1}


async def refuse_connections(dsn: str, refuse: bool) -> None:
    name = dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(f"{pg.SERVER}/postgres", timeout=5)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not refuse).lower()}')
        if refuse:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
    finally:
        await admin.close()


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_database_outage_answers_503_and_backs_off(
    enrolled: tuple[conftest.Central, conftest.ScriptedDevice],
    caplog: pytest.LogCaptureFixture,
) -> None:
    central, device = enrolled
    dsn = central.settings.database_url
    assert dsn is not None
    caplog.set_level(logging.INFO)
    await refuse_connections(dsn, True)
    try:
        await central.publish(device.topic("proof"), device.next_proof())
        for path in ("/api/v1/devices", "/api/v1/checkins", "/api/v1/alerts"):
            async with central.http.get(
                central.url + path, headers={"Authorization": f"Bearer {central.admin_token}"}
            ) as response:
                assert response.status == 503, await response.text()
                assert response.headers["Retry-After"].isdigit()
                assert (await response.json())["error"]["code"] == "store_unavailable"
        await asyncio.sleep(OUTAGE_S)
        async with central.http.get(central.url + "/healthz") as response:
            assert response.status == 503
            assert (await response.json())["store"] == "unavailable"
        assert not [
            r.getMessage() for r in caplog.records if r.exc_info and r.name.startswith("central")
        ]
        dispatcher = lines(caplog, "webhook dispatch")
        assert len(dispatcher) == 1, f"one line per state change: {dispatcher}"
        reconnects = [
            r for r in caplog.records if r.name == "central.ingest.bridge" and r.levelno >= 40
        ]
        assert len(reconnects) <= 1, [r.getMessage() for r in reconnects]
        assert len(lines(caplog, "store unavailable:")) == 1
    finally:
        await refuse_connections(dsn, False)

    async def healthy() -> bool:
        async with central.http.get(central.url + "/healthz") as response:
            return response.status == 200

    await conftest.poll(healthy, 90, "the store to be written again and /healthz to recover")

    async def stored() -> bool:
        return await central.stored_seqs(device.device) == [1, 2]

    await conftest.poll(stored, 90, "the bridge to get the proof again and store it")
    assert len(lines(caplog, "store available again")) == 1
