"""Central in-process on PostgreSQL: enrollment, ingest with a duplicate and a late proof, a
check-in, its evidence bundle and a verification link, read back through the API."""

from __future__ import annotations

import asyncio
import collections.abc
import json
import pathlib
import typing
import uuid

import aiohttp
import aiomqtt
import asyncpg
import pytest
from aiohttp import test_utils

from central import app as app_mod
from central import auth
from central import evidence
from central import pg_store
from central import settings as settings_mod
from central import sqlite_store
from edge_agent.protocol import b64
from edge_agent.protocol import qrtoken
from tests import broker as broker_mod
from tests.central import conftest
from tests.stores import pg


@pytest.fixture()
async def pg_central(
    tmp_path: pathlib.Path, broker: broker_mod.Broker, pg_dsn: str
) -> collections.abc.AsyncIterator[conftest.Central]:
    """tests/central's `central` fixture with `database_url` set; `db` is a second PgStore on
    the same database, for direct reads."""
    port = broker_mod.free_port()
    unique = uuid.uuid4().hex[:10]
    settings = settings_mod.CentralSettings(
        data_dir=tmp_path / "central",
        database_url=pg_dsn,
        http_host="127.0.0.1",
        http_port=port,
        public_url=f"http://127.0.0.1:{port}",
        mqtt_url=broker.url,
        mqtt_client_id=f"central-{unique}",
        mqtt_share_group=f"g{unique}",
        profile_learn_proofs=3,
    )
    server = test_utils.TestServer(app_mod.build(settings), host="127.0.0.1", port=port)
    await server.start_server()
    db = pg_store.PgStore(pg_dsn)
    await db.open()
    site, room = f"s{unique}", "a-101"
    await db.add_site(site, "Test campus")
    await db.add_room(site, room, "Hall A-101", None, None, 50)
    token = auth.new_token()
    await db.add_admin_token(auth.token_hash(token), "admin", "tests", 0)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            identifier=f"pub-{unique}",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as mqtt,
    ):
        # conftest.Central annotates `db` as SqliteStore; it only calls Store methods.
        handle = conftest.Central(
            f"http://127.0.0.1:{port}",
            settings,
            typing.cast(sqlite_store.SqliteStore, db),
            mqtt,
            http,
            token,
            site,
            room,
        )

        async def connected() -> bool:
            status, body = await handle.request("GET", "/healthz")
            return status == 200 and body["mqtt"] == "connected"

        await conftest.poll(connected, 15, "central's MQTT bridge to connect")
        yield handle
    await db.close()
    await server.close()


async def test_ingest_checkin_and_evidence_on_postgres(pg_central: conftest.Central) -> None:
    central = pg_central
    device, code = await central.add_device("pi-a101")
    assert (await central.enroll(device, code))["type"] == "enrolled"
    topic = device.topic("proof")
    first, second = device.next_proof(), device.next_proof()
    third, fourth = device.next_proof(), device.next_proof()
    for payload in (first, second, second, fourth):  # a redelivery, and seq 3 held back
        await central.publish(topic, payload)

    async def seqs(expected: list[int]) -> bool:
        return await central.stored_seqs(device.device) == expected

    async def open_gap_alerts(expected: list[str]) -> bool:
        status, body = await central.request(
            "GET", "/api/v1/alerts?kind=gap&open=true", token=central.admin_token
        )
        return status == 200 and [a["reason"] for a in body["alerts"]] == expected

    await conftest.poll(lambda: seqs([1, 2, 4]), 10, "seq 1, 2 and 4")
    await conftest.poll(lambda: open_gap_alerts(["seq 3..3 missing"]), 10, "a gap alert")
    await central.publish(topic, third)  # late: fills the gap and clears its alert
    await conftest.poll(lambda: seqs([1, 2, 3, 4]), 10, "late seq 3")
    await conftest.poll(lambda: open_gap_alerts([]), 10, "the gap alert to clear")
    status, body = await central.request(
        "GET", f"/api/v1/chain-events?device={device.device}", token=central.admin_token
    )
    assert [(e["kind"], e["first"], e["last"]) for e in body["events"]] == [("gap", 3, 3)]
    assert body["events"][0]["resolved_at"] is not None
    status, body = await central.request("GET", "/api/v1/rejections", token=central.admin_token)
    assert body["counts"] == {"duplicate": 1}

    _, devices = await central.request("GET", "/api/v1/devices", token=central.admin_token)
    (row,) = devices["devices"]
    assert row["last_seq"] == 4 and row["public_key"] == b64.encode(device.signing.public)
    assert row["enrolled"] is True
    _, proofs = await central.request(
        "GET", f"/api/v1/proofs?device={device.device}&limit=3", token=central.admin_token
    )
    assert [(p["seq"], p["jws"]) for p in proofs["proofs"]] == [
        (4, fourth),
        (3, third),
        (2, second),
    ]

    # A check-in with the token of the last proof's slot (current or previous: accepted).
    await central.add_student("s1", "1234")
    last = await central.db.get_proof(central.site, device.device, 4)
    assert last is not None
    slot = last.slot
    url = qrtoken.url(central.url, device.site, device.device, slot, device.token(slot))
    status, body = await central.request(
        "POST", "/api/v1/checkins", {"token": url, "student_id": "s1", "pin": "1234"}
    )
    assert status == 201, body
    checkin = body["checkin"]
    status, body = await central.request(
        "POST", "/api/v1/checkins", {"token": url, "student_id": "s1", "pin": "1234"}
    )
    assert status == 409 and body["error"]["code"] == "duplicate"
    stored = await central.db.get_checkin(checkin["id"])
    assert stored is not None and stored.evidence == checkin["evidence"]

    status, bundle = await central.request(
        "GET", f"/api/v1/checkins/{checkin['id']}/evidence", token=central.admin_token
    )
    assert status == 200, bundle
    raw = json.dumps(bundle, sort_keys=True, separators=(",", ":")).encode()
    central_key = b64.decode((await central.request("GET", "/api/v1/keys"))[1]["ed25519"])
    verified = evidence.verify_bundle(raw, device.signing.public, central_key)
    shown = await central.db.proof_for_slot(central.site, device.device, slot)
    assert shown is not None  # the slot's first proof: the one the evidence names
    assert verified.record["record"] == checkin["id"] and verified.proof.seq == shown.seq
    signed = await central.db.get_checkin(checkin["id"])
    assert signed is not None and signed.record_jws == bundle["record"]

    status, body = await central.request(
        "POST",
        f"/api/v1/checkins/{checkin['id']}/links",
        {"ttl_days": 1},
        token=central.admin_token,
    )
    assert status == 201, body
    status, result = await central.request(
        "GET", body["link"]["url"].removeprefix(central.url) + "?format=json"
    )
    assert status == 200 and result["valid"] is True


async def test_a_database_outage_loses_no_proof(
    pg_central: conftest.Central, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The database refuses connections while a proof arrives: central does not acknowledge
    it, reconnects, and stores it once the database is back (nothing counted as rejected)."""
    central = pg_central
    device, code = await central.add_device("pi-a101")
    assert (await central.enroll(device, code))["type"] == "enrolled"
    topic = device.topic("proof")
    await central.publish(topic, device.next_proof())

    async def seqs(expected: list[int]) -> bool:
        return await central.stored_seqs(device.device) == expected

    await conftest.poll(lambda: seqs([1]), 10, "seq 1")
    name = pg_dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(f"{pg.SERVER}/postgres")
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await central.publish(topic, device.next_proof())
        await asyncio.sleep(3)  # central tries, fails, and goes back to the broker for it
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    await conftest.poll(lambda: seqs([1, 2]), 30, "seq 2 after the outage")
    assert "internal" not in await central.rejections()
    assert "store unavailable" in caplog.text  # the outage was met, not missed
