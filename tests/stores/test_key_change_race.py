"""A proof under a device's new key that is verified while another central process is still
storing the key change: with the grace wait it is accepted once the change lands; without
it (or for a key nobody announced) it is refused as `bad_signature`."""

from __future__ import annotations

import asyncio

import pytest

from central.ingest import verifier
from central.storage import database
from central.storage import store
from edge_agent.protocol import b64
from edge_agent.protocol import chain
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from edge_agent.protocol import topics

SITE, ROOM, DEVICE = "campus", "a-101", "pi-1"
SLOT_S = 30
TOLERANCE_MS = 900_000
IAT = 1_800_000_000_000


def signed(key: keys.SigningKey, seq: int, prev: str) -> bytes:
    iat = IAT + seq * 1000
    slot = slots.slot_of(iat, SLOT_S)
    claims = proof.Claims.model_validate(
        {
            "site": SITE,
            "room": ROOM,
            "device": DEVICE,
            "seq": seq,
            "boot": "0123456789abcdef",
            "iat": iat,
            "clock": {"source": "ntp", "uncertainty_ms": 8},
            "slot": slot,
            "slot_s": SLOT_S,
            "otp_step_s": 30,
            "qr": b64.encode(qrtoken.sign(key, SITE, DEVICE, ROOM, slot)),
            "prev": prev,
        }
    )
    return proof.sign(claims, key).encode("ascii")


async def check(
    db: database.Database, payload: bytes, grace: verifier.KeyChangeGrace | None
) -> verifier.Accepted:
    return await verifier.verify(
        db,
        verifier.ClockOffsets(),
        topics.topic(SITE, DEVICE, "proof"),
        payload,
        IAT + 5_000,
        proof.MAX_BYTES,
        TOLERANCE_MS,
        verifier.KeyStarts(),
        None,
        grace,
    )


async def enrolled(db: database.Database, old: keys.SigningKey) -> str:
    """The device bound to `old`, with seq 1 stored; returns seq 1's chain link."""
    await db.add_site(SITE, "Main campus")
    await db.add_room(SITE, ROOM, "Hall A-101", None, None, 50.0)
    await db.add_device(SITE, ROOM, DEVICE, "code", 2_000_000)
    await db.bind_device(SITE, DEVICE, old.public, b"\x02" * 32, 1_000)
    first = signed(old, 1, chain.GENESIS)
    accepted = await check(db, first, None)
    await db.store_proof(accepted.row, SLOT_S, 30, accepted.clock_offset_ms)
    return chain.link(first.decode("ascii"))


def rotation(new: keys.SigningKey, from_seq: int) -> store.DeviceKey:
    return store.DeviceKey(
        id=0,
        site=SITE,
        device=DEVICE,
        room=ROOM,
        from_seq=from_seq,
        ed25519=new.public,
        x25519=b"\x03" * 32,
        kind="rotate",
        added_at=2_000,
        evidence="the signed key change",
    )


async def test_a_proof_racing_its_key_change_is_accepted_after_the_grace(
    db: database.Database,
) -> None:
    old, new = keys.SigningKey.generate(), keys.SigningKey.generate()
    link = await enrolled(db, old)
    second = signed(new, 2, link)

    # Without the grace (one process: the change came first, in order), refused at once.
    with pytest.raises(verifier.Rejected) as refused:
        await check(db, second, None)
    assert refused.value.reason == "bad_signature"

    async def other_process_stores_the_change() -> None:
        await asyncio.sleep(0.05)
        await db.change_device_keys(rotation(new, 2), old.public, None)

    grace = verifier.KeyChangeGrace(delay_s=0.5)
    accepted, _ = await asyncio.gather(check(db, second, grace), other_process_stores_the_change())
    assert (accepted.row.seq, accepted.row.device) == (2, DEVICE)
    await db.store_proof(accepted.row, SLOT_S, 30, accepted.clock_offset_ms)
    assert (await db.get_device(SITE, DEVICE)).last_seq == 2  # type: ignore[union-attr]


async def test_an_unannounced_key_is_refused_and_waits_at_most_once(db: database.Database) -> None:
    old, stranger = keys.SigningKey.generate(), keys.SigningKey.generate()
    link = await enrolled(db, old)
    forged = signed(stranger, 2, link)
    grace = verifier.KeyChangeGrace(delay_s=0.01, every_s=3600)
    with pytest.raises(verifier.Rejected) as refused:
        await check(db, forged, grace)  # waits, finds no new key, refuses
    assert refused.value.reason == "bad_signature"
    # The device has had its wait: the next bad proof is refused without one.
    assert await grace.wait(SITE, DEVICE) is False
    assert await grace.wait(SITE, "another-device") is True
    with pytest.raises(verifier.Rejected) as again:
        await check(db, forged, grace)
    assert again.value.reason == "bad_signature"
    assert (await db.get_device(SITE, DEVICE)).last_seq == 1  # type: ignore[union-attr]
