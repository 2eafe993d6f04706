"""Central in-process on PostgreSQL: enrollment, ingest with a duplicate and a late proof, a
check-in, its evidence bundle and a verification link, read back through the API."""

from __future__ import annotations

import asyncio
import json
import typing

import asyncpg
import pytest

from central.checkin import evidence
from edge_agent.protocol import b64
from edge_agent.protocol import qrtoken
from tests.central import conftest
from tests.stores import pg


@pytest.fixture()
def central_overrides(pg_dsn: str) -> dict[str, typing.Any]:
    """tests/central's in-process central (fixture `central`), here on PostgreSQL: the same
    fixture, so that both stores are driven by the very same code."""
    return {"database_url": pg_dsn}


async def test_ingest_checkin_and_evidence_on_postgres(central: conftest.Central) -> None:
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
    central: conftest.Central, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The database refuses connections while a proof arrives: central does not acknowledge
    it, reconnects, and stores it once the database is back (nothing counted as rejected)."""
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
