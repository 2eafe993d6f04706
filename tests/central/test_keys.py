"""Key changes at central: a rotation recorded with its first seq, proofs verified by the key
of their seq (old proofs arriving after the change still count), forged and replayed key
changes refused, and re-enrollment with a code sealed to the device."""

from __future__ import annotations

import asyncio
import json
import time
import typing
import uuid

import aiomqtt
import pytest

from central.checkin import evidence
from edge_agent.protocol import ack
from edge_agent.protocol import b64
from edge_agent.protocol import chain
from edge_agent.protocol import command
from edge_agent.protocol import enroll
from edge_agent.protocol import jws
from edge_agent.protocol import keychange
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from tests.central import conftest

Central = conftest.Central
Device = conftest.ScriptedDevice


def rotate(device: Device) -> tuple[str, keys.SigningKey]:
    """The device's key change for its next seq; the device signs with the new key after it."""
    old = device.signing
    new = keys.SigningKey.generate()
    new_x = keys.AgreementKey.generate()
    message = keychange.sign(
        old,
        new,
        new_x.public,
        device.site,
        device.room,
        device.device,
        device.seq + 1,
        int(time.time() * 1000),
    )
    device.signing, device.agreement = new, new_x
    return message, old


async def wait_counts(central: Central, reason: str, count: int = 1) -> None:
    async def counted() -> bool:
        return (await central.rejections()).get(reason, 0) >= count

    await conftest.poll(counted, 10, f"rejection {reason}")


async def test_rotation_keeps_old_proofs_valid_by_seq(
    enrolled: tuple[Central, Device],
) -> None:
    central, device = enrolled
    base = int(time.time() * 1000)
    queued = [device.next_proof(base + 100 * i) for i in (1, 2)]  # seq 2, 3: old key
    message, old = rotate(device)
    after = [device.next_proof(base + 100 * i) for i in (3, 4)]  # seq 4, 5: new key

    # The key change overtakes the proofs still queued under the old key.
    await central.publish(device.topic("enroll"), message)

    async def rotated() -> bool:
        found = await central.db.get_device(central.site, device.device)
        return found is not None and found.ed25519 == device.signing.public

    await conftest.poll(rotated, 10, "the new key at central")
    for compact in [*after, *queued]:
        await central.publish(device.topic("proof"), compact)

    async def all_stored() -> bool:
        return await central.stored_seqs(device.device) == [1, 2, 3, 4, 5]

    await conftest.poll(all_stored, 10, "every proof, old and new key")
    rows = sorted(
        await central.db.list_proofs(central.site, device.device, 10), key=lambda r: r.seq
    )
    for row in rows[1:]:
        parsed, claims = proof.decode(row.jws)
        assert claims.prev == chain.link(next(r.jws for r in rows if r.seq == row.seq - 1))
        assert jws.verify(parsed, old.public if row.seq < 4 else device.signing.public)

    status, body = await central.request(
        "GET", f"/api/v1/devices/{central.site}/{device.device}/keys", token=central.admin_token
    )
    assert status == 200, body
    assert [(k["kind"], k["from_seq"], k["current"]) for k in body["keys"]] == [
        ("enroll", 1, False),
        ("rotate", 4, True),
    ]
    assert body["keys"][1]["evidence"] == message

    # The old key signs nothing from seq 4 on: a proof it signs for seq 6 is refused.
    stolen = Device(device.site, device.room, device.device, signing=old, seq=5, prev=device.prev)
    await central.publish(device.topic("proof"), stolen.next_proof())
    await wait_counts(central, "retired_key")

    # The same key change again, and one whose signature is not the device's key.
    await central.publish(device.topic("enroll"), message)
    await wait_counts(central, "key_change_replay")
    forged, _ = rotate(Device(device.site, device.room, device.device, seq=9))
    await central.publish(device.topic("enroll"), forged)
    await wait_counts(central, "key_change_bad_signature")
    await central.publish(
        device.topic("enroll"), jws.sign(b"[]", old, device.device, keychange.TYP)
    )
    await wait_counts(central, "key_change_malformed")
    assert await central.stored_seqs(device.device) == [1, 2, 3, 4, 5]
    history = await central.db.device_keys(central.site, device.device)
    assert [k.from_seq for k in history] == [1, 4]


async def test_key_change_below_the_head_is_stale(enrolled: tuple[Central, Device]) -> None:
    central, device = enrolled
    await central.publish(device.topic("proof"), device.next_proof())  # seq 2 stored
    await conftest.poll(
        lambda: _seqs_equal(central, device, [1, 2]), 10, "the second proof to be stored"
    )
    device.seq = 1  # claims the new key from seq 2, which central already holds
    message, _ = rotate(device)
    await central.publish(device.topic("enroll"), message)
    await wait_counts(central, "key_change_stale_seq")
    found = await central.db.get_device(central.site, device.device)
    assert found is not None and found.ed25519 != device.signing.public


async def _next_not_ack(client: aiomqtt.Client) -> bytes:
    """The next message on the device's `cmd` that is not one of central's acks (those come
    after each batch of proofs)."""
    async for message in client.messages:
        payload = typing.cast(bytes, message.payload)
        if not ack.is_ack(payload):
            return payload
    raise AssertionError("the subscription ended")


async def _seqs_equal(central: Central, device: Device, seqs: list[int]) -> bool:
    return await central.stored_seqs(device.device) == seqs


async def test_re_enroll_seals_the_code_and_binds_new_keys(
    enrolled: tuple[Central, Device],
) -> None:
    central, device = enrolled
    await central.db.add_room(central.site, "b-202", "Lab B-202", None, None, 50)
    central_public = b64.decode((await central.request("GET", "/api/v1/keys"))[1]["ed25519"])
    path = f"/api/v1/devices/{central.site}/{device.device}/commands"
    async with aiomqtt.Client(
        "127.0.0.1",
        central.settings.mqtt_host_port()[1],
        identifier=f"dev-{uuid.uuid4().hex}",
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.subscribe(device.topic("cmd"), qos=1)
        status, body = await central.request(
            "POST", path, {"kind": "re_enroll", "args": {"code": "x"}}, token=central.admin_token
        )
        assert status == 400, body  # the code is central's to make
        status, body = await central.request(
            "POST", path, {"kind": "re_enroll", "args": {"room": "nope"}}, token=central.admin_token
        )
        assert status == 400, body
        status, body = await central.request(
            "POST",
            path,
            {"kind": "re_enroll", "args": {"room": "b-202"}},
            token=central.admin_token,
        )
        assert status == 201, body
        assert body["command"]["args"] == {"room": "b-202"}
        async with asyncio.timeout(10):
            raw = await _next_not_ack(client)
        found = command.verify(
            raw, central_public, device.site, device.device, int(time.time() * 1000)
        )
        assert found.kind == "re_enroll" and found.args["room"] == "b-202"
        code = command.open_code(device.agreement, found.args["code"])
        record = await central.db.get_device(central.site, device.device)
        assert record is not None and record.enroll_code == code
        assert code not in raw.decode() and b64.decode(code) not in raw
        assert b64.decode(code) not in b64.decode(raw.decode().split(".")[1])

        # A different device cannot open it; the device re-enrolls with new keys.
        try:
            command.open_code(keys.AgreementKey.generate(), found.args["code"])
        except command.CommandError as exc:
            assert exc.reason == "bad_code"
        else:
            raise AssertionError("opened with the wrong key")
        old = device.signing
        new, new_x = keys.SigningKey.generate(), keys.AgreementKey.generate()
        request = enroll.sign_request(
            code, device.site, "b-202", device.device, new, new_x.public, device.seq + 1
        )
        await client.publish(device.topic("enroll"), request, qos=1)
        async with asyncio.timeout(10):
            reply = enroll.verify_reply(await _next_not_ack(client), central_public)
    assert reply["type"] == "enrolled" and reply["room"] == "b-202", reply
    record = await central.db.get_device(central.site, device.device)
    assert record is not None and record.ed25519 == new.public and record.room == "b-202"
    assert record.enroll_code is None

    # New proofs name the new room and chain on; the old key signs nothing any more.
    stolen = Device(device.site, device.room, device.device, signing=old, seq=1, prev=device.prev)
    device.signing, device.agreement, device.room = new, new_x, "b-202"
    await central.publish(device.topic("proof"), device.next_proof())
    await conftest.poll(lambda: _seqs_equal(central, device, [1, 2]), 10, "the new-key proof")
    stolen.seq, stolen.prev = device.seq, device.prev
    await central.publish(device.topic("proof"), stolen.next_proof())
    await wait_counts(central, "retired_key")
    history = await central.db.device_keys(central.site, device.device)
    assert [(k.kind, k.from_seq, k.room) for k in history] == [
        ("enroll", 1, central.room),
        ("re_enroll", 2, "b-202"),
    ]
    # The request, signed by the new key, is the new key's evidence.
    assert (history[1].evidence.encode(), history[1].note) == (request, "")
    # The burnt code does not work twice.
    again = enroll.make_request(
        code, device.site, "b-202", device.device, old.public, device.agreement.public, 9
    )
    await central.publish(device.topic("enroll"), again)
    await wait_counts(central, "enroll_already_enrolled")


async def test_check_ins_and_evidence_across_a_rotation(
    enrolled: tuple[Central, Device],
) -> None:
    """The token on screen when the key changes still counts for its slot, and a record made
    before the change keeps verifying with the key that signed its proof."""
    central, device = enrolled
    for student in ("s1", "s2", "s3"):
        await central.add_student(student, "2468")

    async def scan(student: str, signer: keys.SigningKey) -> tuple[int, typing.Any]:
        slot = slots.slot_of(int(time.time() * 1000), conftest.SLOT_S)
        url = qrtoken.url(central.url, device.site, device.device, slot, device.token(slot, signer))
        body = {"token": url, "student_id": student, "pin": "2468"}
        return await central.request("POST", "/api/v1/checkins", body)

    status, answer = await scan("s1", device.signing)
    assert status == 201, answer
    before = answer["checkin"]
    message, old = rotate(device)
    await central.publish(device.topic("enroll"), message)

    async def rotated() -> bool:
        found = await central.db.get_device(central.site, device.device)
        return found is not None and found.ed25519 == device.signing.public

    await conftest.poll(rotated, 10, "the new key at central")
    status, during = await scan("s2", old)  # the screen has not redrawn yet
    assert status == 201, during
    status, forged = await scan("s3", keys.SigningKey.generate())
    assert (status, forged["error"]["code"]) == (403, "forged_token")

    status, bundle = await central.request(
        "GET", f"/api/v1/checkins/{before['id']}/evidence", token=central.admin_token
    )
    assert status == 200, bundle
    raw = json.dumps(bundle, sort_keys=True, separators=(",", ":")).encode()
    central_key = b64.decode((await central.request("GET", "/api/v1/keys"))[1]["ed25519"])
    assert evidence.verify_bundle(raw, old.public, central_key).record["student_id"] == "s1"
    with pytest.raises(evidence.EvidenceError):
        evidence.verify_bundle(raw, device.signing.public, central_key)
    status, link = await central.request(
        "POST", f"/api/v1/checkins/{before['id']}/links", token=central.admin_token
    )
    assert status == 201, link
    status, shown = await central.request(
        "GET", link["link"]["url"].split(central.url, 1)[-1] + "?format=json"
    )
    assert status == 200 and shown["valid"] is True, shown
