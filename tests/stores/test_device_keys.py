"""The key history, on SQLite and on PostgreSQL: enrollment opens it, a change appends to it
only while the current key, the chain head and (for re-enrollment) the code still hold."""

from __future__ import annotations

import dataclasses

import pytest

from central.storage import database
from central.storage import store

SITE = "campus"
DEVICE = "pi-1"


def new_key(seed: int, from_seq: int, kind: str = "rotate", room: str = "a-101") -> store.DeviceKey:
    return store.DeviceKey(
        id=0,
        site=SITE,
        device=DEVICE,
        room=room,
        from_seq=from_seq,
        ed25519=bytes([seed]) * 32,
        x25519=bytes([seed + 1]) * 32,
        kind=kind,
        added_at=5_000 + seed,
        evidence=f"message {seed}",
    )


async def test_key_history(db: database.Database) -> None:
    await db.add_site(SITE, "Main campus")
    await db.add_room(SITE, "a-101", "Hall A-101", None, None, 50.0)
    await db.add_room(SITE, "b-202", "Lab B-202", None, None, 50.0)
    await db.add_device(SITE, "a-101", DEVICE, "code", 2_000_000)
    assert await db.device_keys(SITE, DEVICE) == []
    assert await db.arm_reenroll(SITE, DEVICE, "again", 9, "b-202") is False  # no keys yet
    await db.bind_device(SITE, DEVICE, b"\x01" * 32, b"\x02" * 32, 1_000)
    (first,) = await db.device_keys(SITE, DEVICE)
    assert (first.kind, first.from_seq, first.room, first.ed25519) == (
        "enroll",
        1,
        "a-101",
        b"\x01" * 32,
    )
    assert isinstance(first.ed25519, bytes) and first.added_at == 1_000

    rotated = new_key(10, 5)
    with pytest.raises(store.Conflict):  # not the current key
        await db.change_device_keys(rotated, b"\x09" * 32, None)
    await db.change_device_keys(rotated, b"\x01" * 32, None)
    with pytest.raises(store.Conflict):  # a replay: the key moved on
        await db.change_device_keys(rotated, b"\x01" * 32, None)
    device = await db.get_device(SITE, DEVICE)
    assert device is not None and (device.ed25519, device.x25519) == (b"\x0a" * 32, b"\x0b" * 32)
    assert (await db.device_key_at(SITE, DEVICE, 4)).ed25519 == b"\x01" * 32  # type: ignore[union-attr]
    assert (await db.device_key_at(SITE, DEVICE, 5)).ed25519 == b"\x0a" * 32  # type: ignore[union-attr]
    assert await db.device_key_at(SITE, DEVICE, 0) is None
    assert await db.device_key_at(SITE, "nope", 5) is None

    # Re-enrollment: armed with a code and a room; the change burns the code.
    assert await db.arm_reenroll(SITE, DEVICE, "fresh", 9_000, "b-202") is True
    assert await db.reenroll_room(SITE, DEVICE) == "b-202"
    moved = new_key(20, 8, "re_enroll", "b-202")
    with pytest.raises(store.Conflict):
        await db.change_device_keys(moved, b"\x0a" * 32, "wrong")
    await db.change_device_keys(moved, b"\x0a" * 32, "fresh")
    device = await db.get_device(SITE, DEVICE)
    assert device is not None and device.room == "b-202" and device.enroll_code is None
    assert await db.reenroll_room(SITE, DEVICE) is None
    history = await db.device_keys(SITE, DEVICE)
    assert [(k.kind, k.from_seq, k.room, k.evidence) for k in history] == [
        ("enroll", 1, "a-101", ""),
        ("rotate", 5, "a-101", "message 10"),
        ("re_enroll", 8, "b-202", "message 20"),
    ]
    assert history[1] == dataclasses.replace(rotated, id=history[1].id)

    # Not below the chain head: a key cannot take over seqs central already holds.
    await db.store_proof(
        store.ProofRow(SITE, DEVICE, 9, 100, 1_000, 1_001, "h.p.s", "0" * 64, False), 20, 30, 0
    )
    with pytest.raises(store.Conflict):
        await db.change_device_keys(new_key(30, 9), b"\x14" * 32, None)
    await db.change_device_keys(new_key(30, 10), b"\x14" * 32, None)


async def test_enrollment_evidence_and_the_otp_digest(db: database.Database) -> None:
    """The enrollment request is the first key's evidence (with a note when it is weaker
    than a request signed by the key); a proof's TOTP digest is the device's until the next."""
    await db.add_site(SITE, "Main campus")
    await db.add_room(SITE, "a-101", "Hall A-101", None, None, 50.0)
    await db.add_device(SITE, "a-101", DEVICE, "code", 2_000_000)
    await db.bind_device(SITE, DEVICE, b"\x01" * 32, b"\x02" * 32, 1_000, "eyJ.signed.x", "")
    (first,) = await db.device_keys(SITE, DEVICE)
    assert (first.kind, first.evidence, first.note) == ("enroll", "eyJ.signed.x", "")
    await db.change_device_keys(dataclasses.replace(new_key(10, 5), note="why"), b"\x01" * 32, None)
    assert [k.note for k in await db.device_keys(SITE, DEVICE)] == ["", "why"]

    device = await db.get_device(SITE, DEVICE)
    assert device is not None and device.otp_digest is None
    row = store.ProofRow(SITE, DEVICE, 1, 100, 1_000, 1_001, "h.p.s", "0" * 64, False)
    await db.store_proof(row, 20, 30, 0, "sha256")
    device = await db.get_device(SITE, DEVICE)
    assert device is not None and (device.otp_step_s, device.otp_digest) == (30, "sha256")
    await db.store_proof(dataclasses.replace(row, seq=2, hash="1" * 64), 20, 60, 0)
    device = await db.get_device(SITE, DEVICE)
    assert device is not None and (device.otp_step_s, device.otp_digest) == (60, "sha1")
