"""Proof ingest over a real broker: valid chains stored once, bad input counted, never stored."""

from __future__ import annotations

import os
import time
import typing

from central.storage import database
from edge_agent.protocol import b64
from edge_agent.protocol import chain
from tests.central import conftest


async def test_valid_chain_is_stored_once_with_gaps_marked(enrolled: tuple) -> None:
    central, device = enrolled
    second = device.next_proof()
    await central.publish(device.topic("proof"), second)
    await central.publish(device.topic("proof"), second)  # QoS 1 redelivery
    device.next_proof()  # seq 3 lost on the way: a gap
    await central.publish(device.topic("proof"), device.next_proof())

    async def stored() -> bool:
        return await central.stored_seqs(device.device) == [1, 2, 4]

    await conftest.poll(stored, 10, "seq 1, 2 and 4")
    rows = {row.seq: row for row in await central.db.list_proofs(central.site, device.device, 10)}
    assert rows[2].hash == chain.link(second) and not rows[2].gap_before
    assert rows[4].gap_before
    assert (await central.rejections()).get("duplicate") == 1
    status, body = await central.request("GET", "/api/v1/devices", token=central.admin_token)
    assert status == 200
    (row,) = body["devices"]
    assert row["last_seq"] == 4 and row["public_key"] == b64.encode(device.signing.public)


async def test_bad_input_is_counted_and_never_stored(enrolled: tuple) -> None:
    central, device = enrolled
    topic = device.topic("proof")
    valid = device.next_proof()
    stranger = conftest.ScriptedDevice(central.site, central.room, "pi-unknown")
    impostor = conftest.ScriptedDevice(central.site, central.room, device.device)
    impostor.seq, impostor.prev = device.seq, device.prev
    replay = conftest.ScriptedDevice(
        central.site, central.room, device.device, signing=device.signing
    )
    expected = {
        "malformed": [os.urandom(300), valid[: len(valid) // 2], b"", "\u00e9t\u00e9".encode()],
        "oversize": [b"x" * 20000],
        "unknown_device": [],
        "bad_signature": [impostor.next_proof()],
        "fork": [replay.next_proof(iat_ms=int(time.time() * 1000) - 5000)],  # seq 1 again
        "topic_mismatch": [],
        "schema": [],
    }
    for payloads in expected.values():
        for payload in payloads:
            await central.publish(topic, payload)
    await central.publish(stranger.topic("proof"), stranger.next_proof())
    expected["unknown_device"].append(b"")
    await central.publish(
        conftest.ScriptedDevice(central.site, central.room, "pi-other").topic("proof"), valid
    )
    expected["topic_mismatch"].append(b"")
    await central.publish(topic, device.next_proof(iat_ms=10**15))
    expected["clock"] = [b""]
    device.seq, device.prev = 1, chain.link(device.sent[0])
    forged_slot = device.next_proof(slot=1)
    await central.publish(topic, forged_slot)
    expected["schema"].append(b"")

    async def all_counted() -> bool:
        counts = await central.rejections()
        return all(counts.get(reason, 0) >= len(items) for reason, items in expected.items())

    await conftest.poll(all_counted, 10, f"rejections {expected.keys()}")
    assert await central.stored_seqs(device.device) == [1]
    status, body = await central.request("GET", "/api/v1/rejections", token=central.admin_token)
    assert status == 200 and body["counts"]["malformed"] >= 4
    assert all("payload" not in row for row in body["recent"])
    status, health = await central.request("GET", "/healthz")
    assert status == 200 and health["mqtt"] == "connected"

    # The genuine next proof is still accepted after all that.
    device.seq, device.prev = 1, chain.link(device.sent[0])
    await central.publish(topic, device.next_proof())

    async def accepted() -> bool:
        return await central.stored_seqs(device.device) == [1, 2]

    await conftest.poll(accepted, 10, "the genuine proof after bad input")


async def test_enrollment_rejections(central: conftest.Central) -> None:
    device, code = await central.add_device("pi-one")
    wrong = b64.encode(os.urandom(32))
    reply = await central.enroll(device, wrong)
    assert reply["type"] == "enroll_rejected" and reply["reason"] == "bad_mac"
    assert (await central.enroll(device, code))["type"] == "enrolled"
    # The same keys asking again (a lost reply) get the same answer; other keys do not.
    assert (await central.enroll(device, code))["type"] == "enrolled"
    thief = conftest.ScriptedDevice(central.site, central.room, "pi-one")
    reply = await central.enroll(thief, code)
    assert reply["type"] == "enroll_rejected" and reply["reason"] == "already_enrolled"
    stored = await central.db.get_device(central.site, "pi-one")
    assert stored is not None and stored.ed25519 == device.signing.public
    assert stored.enroll_code is None

    expired, expired_code = await central.add_device("pi-two")
    await typing.cast(database.Database, central.db).engine.write(
        lambda conn: conn.exec_driver_sql(
            "UPDATE devices SET enroll_expires_ms = 1 WHERE device = 'pi-two'"
        )
    )
    reply = await central.enroll(expired, expired_code)
    assert reply["type"] == "enroll_rejected" and reply["reason"] == "code_expired"
