"""The Store contract, run on SQLite and on PostgreSQL: the same calls give the same answers,
the same Conflict and NotFound, the same order and pages."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import sqlite3

import asyncpg
import pytest

from central.domain import environment
from central.domain import timetable
from central.storage import database
from central.storage import store
from tests.stores import conftest

SITE = "campus"
ROOM = "a-101"
DEVICE = "pi-1"


async def provision(db: database.Database) -> None:
    """A site, a room and an enrolled device with its keys bound."""
    await db.add_site(SITE, "Main campus")
    await db.add_room(SITE, ROOM, "Hall A-101", 48.15, 11.57, 50.0)
    await db.add_device(SITE, ROOM, DEVICE, "code", 2_000_000)
    await db.bind_device(SITE, DEVICE, b"\x01" * 32, b"\x02" * 32, 1_000)


def proof_row(seq: int, slot: int | None = None, gap_before: bool = False) -> store.ProofRow:
    return store.ProofRow(
        site=SITE,
        device=DEVICE,
        seq=seq,
        slot=slot if slot is not None else 1000 + seq,
        iat=1_700_000_000_000 + seq * 20_000,
        received_at=1_700_000_000_500 + seq * 20_000,
        jws=f"header.payload-{seq}.signature",
        hash=f"{seq:064x}",
        gap_before=gap_before,
        verdict="weak",
        reasons=("no confirmed profile", f"seq {seq}"),
    )


def new_checkin(
    student: str,
    slot: int,
    session_id: int | None = None,
    session_date: str | None = None,
    browser: str | None = None,
    created_at: int = 5_000,
    room: str = ROOM,
) -> store.NewCheckin:
    return store.NewCheckin(
        site=SITE,
        room=room,
        device=DEVICE,
        student_id=student,
        slot=slot,
        method="qr",
        created_at=created_at,
        token_age_ms=1_200,
        status="present",
        flags=("shared_browser", "off_campus"),
        # Key order on purpose not sorted: it must come back as written.
        evidence={"verdict": "weak", "network": "unknown", "age": 3, "band": {"z": 1, "a": 2}},
        browser=browser,
        session_id=session_id,
        session_date=session_date,
    )


async def test_sites_and_rooms(db: database.Database) -> None:
    await db.add_site(SITE, "Main campus")
    with pytest.raises(store.Conflict):
        await db.add_site(SITE, "again")
    with pytest.raises(store.NotFound):
        await db.add_room("nowhere", ROOM, "Hall", None, None, 50.0)
    await db.add_site("annex", "Annex")
    await db.add_room(SITE, "a1", "Hall 1", None, None, 30.0)
    await db.add_room(SITE, "a-2", "Hall 2", 48.1, 11.5, 50.0)
    await db.add_room("annex", "b1", "Annex 1", None, None, 50.0)
    with pytest.raises(store.Conflict):
        await db.add_room(SITE, "a1", "Hall 1 again", None, None, 30.0)
    assert await db.get_room(SITE, "a-2") == store.Room(SITE, "a-2", "Hall 2", 48.1, 11.5, 50.0)
    assert await db.get_room(SITE, "nope") is None
    # Bytewise order ("-" before digits), as SQLite sorts, whatever the database locale.
    assert [(r.site, r.room) for r in await db.list_rooms(None)] == [
        ("annex", "b1"),
        (SITE, "a-2"),
        (SITE, "a1"),
    ]
    assert [r.room for r in await db.list_rooms(SITE)] == ["a-2", "a1"]
    await db.update_room(SITE, "a1", 1.5, 2.5, 75.0)
    assert await db.get_room(SITE, "a1") == store.Room(SITE, "a1", "Hall 1", 1.5, 2.5, 75.0)
    await db.update_room(SITE, "a1", None, None, 20.0)
    assert await db.get_room(SITE, "a1") == store.Room(SITE, "a1", "Hall 1", None, None, 20.0)
    with pytest.raises(store.NotFound):
        await db.update_room(SITE, "nope", None, None, 20.0)


async def test_devices_enrollment_and_status(db: database.Database) -> None:
    await db.add_site(SITE, "Main campus")
    await db.add_room(SITE, ROOM, "Hall A-101", None, None, 50.0)
    await db.add_room(SITE, "b-1", "Hall B", None, None, 50.0)
    with pytest.raises(store.NotFound):
        await db.add_device(SITE, "nope", DEVICE, "code", 2_000)
    await db.add_device(SITE, ROOM, "pi-2", "code-2", 2_000)
    await db.add_device(SITE, ROOM, DEVICE, "code-1", 3_000)
    await db.add_device(SITE, "b-1", "pi-10", "code-10", 4_000)
    with pytest.raises(store.Conflict):
        await db.add_device(SITE, "b-1", DEVICE, "again", 2_000)
    fresh = await db.get_device(SITE, DEVICE)
    assert fresh == store.Device(
        site=SITE,
        room=ROOM,
        device=DEVICE,
        ed25519=None,
        x25519=None,
        enroll_code="code-1",
        enroll_expires_ms=3_000,
        enrolled_at=None,
        last_seq=0,
        last_hash=None,
        last_proof_at=None,
        last_iat=None,
        last_slot=None,
        slot_s=None,
        otp_step_s=None,
        clock_offset_ms=None,
        online=False,
        status_at=None,
        last_verdict=None,
    )
    assert await db.get_device(SITE, "nope") is None
    assert [d.device for d in await db.list_devices()] == [DEVICE, "pi-10", "pi-2"]
    assert [d.device for d in await db.list_devices("elsewhere")] == []
    assert [d.device for d in await db.room_devices(SITE, ROOM)] == [DEVICE, "pi-2"]

    await db.bind_device(SITE, DEVICE, b"\x00\xff" * 16, b"\x7f" * 32, 1_500)
    bound = await db.get_device(SITE, DEVICE)
    assert bound is not None
    assert (bound.ed25519, bound.x25519) == (b"\x00\xff" * 16, b"\x7f" * 32)
    assert isinstance(bound.ed25519, bytes)
    assert (bound.enroll_code, bound.enroll_expires_ms, bound.enrolled_at) == (None, None, 1_500)
    with pytest.raises(store.Conflict):  # the code is burnt: it works once
        await db.bind_device(SITE, DEVICE, b"\x03" * 32, b"\x04" * 32, 1_600)
    with pytest.raises(store.Conflict):
        await db.bind_device(SITE, "nope", b"\x03" * 32, b"\x04" * 32, 1_600)

    assert await db.set_online(SITE, DEVICE, True, 10) is True
    assert await db.set_online(SITE, DEVICE, True, 11) is False
    online = await db.get_device(SITE, DEVICE)
    assert online is not None and online.online is True and online.status_at == 10
    assert await db.set_online(SITE, DEVICE, False, 12) is True
    assert await db.set_online(SITE, "nope", True, 13) is False


async def test_proofs_advance_the_head_once_and_page_newest_first(db: database.Database) -> None:
    await provision(db)
    for seq in (1, 2, 4):
        await db.store_proof(proof_row(seq, gap_before=seq == 4), 20, 30, -150)
    head = await db.get_device(SITE, DEVICE)
    assert head is not None
    assert (head.last_seq, head.last_hash, head.last_iat, head.last_slot) == (
        4,
        f"{4:064x}",
        proof_row(4).iat,
        proof_row(4).slot,
    )
    assert (head.last_proof_at, head.slot_s, head.otp_step_s, head.clock_offset_ms) == (
        proof_row(4).received_at,
        20,
        30,
        -150,
    )
    assert head.last_verdict == "weak"

    with pytest.raises(store.Conflict):
        await db.store_proof(proof_row(2), 20, 30, 0)
    await db.store_proof(proof_row(3), 10, 15, 999)  # late: fills a gap, the head stays
    head = await db.get_device(SITE, DEVICE)
    assert head is not None and (head.last_seq, head.slot_s, head.clock_offset_ms) == (4, 20, -150)

    assert await db.get_proof(SITE, DEVICE, 4) == proof_row(4, gap_before=True)
    assert await db.get_proof(SITE, DEVICE, 9) is None
    assert await db.proof_hash(SITE, DEVICE, 3) == f"{3:064x}"
    assert await db.proof_hash(SITE, DEVICE, 9) is None

    await db.store_proof(proof_row(5, slot=1004), 20, 30, 0)  # two proofs in slot 1004
    assert await db.proof_for_slot(SITE, DEVICE, 1004) == proof_row(4, gap_before=True)
    assert await db.proof_for_slot(SITE, DEVICE, 1) is None

    assert [p.seq for p in await db.list_proofs(SITE, DEVICE, 2)] == [5, 4]
    assert [p.seq for p in await db.list_proofs(SITE, DEVICE, 2, before_seq=4)] == [3, 2]
    assert [p.seq for p in await db.list_proofs(None, DEVICE, 10, before_seq=2)] == [1]
    assert await db.list_proofs("elsewhere", DEVICE, 10) == []
    assert (await db.list_proofs(SITE, DEVICE, 1))[0] == proof_row(5, slot=1004)


async def test_concurrent_writers_store_a_proof_exactly_once(backend: conftest.Backend) -> None:
    """Twenty handles (as twenty processes would) store the same proof at once."""
    handles = [backend.make() for _ in range(20)]
    for handle in handles:
        await handle.open()
    try:
        await provision(handles[0])

        async def attempt(handle: database.Database) -> bool:
            try:
                await handle.store_proof(proof_row(1), 20, 30, 0)
            except store.Conflict:
                return False
            return True

        outcomes = await asyncio.gather(*(attempt(handle) for handle in handles))
        assert outcomes.count(True) == 1
        assert await handles[1].get_proof(SITE, DEVICE, 1) == proof_row(1)
        head = await handles[2].get_device(SITE, DEVICE)
        assert head is not None and head.last_seq == 1
    finally:
        for handle in handles:
            await handle.close()


async def test_chain_events_and_gap_settling(db: database.Database) -> None:
    await provision(db)
    await db.store_proof(proof_row(1), 20, 30, 0)
    await db.store_proof(proof_row(5, gap_before=True), 20, 30, 0)
    gap = await db.add_chain_event(SITE, DEVICE, "gap", 2, 4, "", 100)
    assert (gap.kind, gap.first, gap.last, gap.detected_at, gap.resolved_at) == (
        "gap",
        2,
        4,
        100,
        None,
    )
    fork = await db.add_chain_event(SITE, DEVICE, "fork", 1, 1, "other.jws.here", 110)
    other = await db.add_chain_event(SITE, "pi-9", "gap", 7, 7, "", 120)
    assert gap.id < fork.id < other.id
    assert await db.list_chain_events(None, None, 10, 0) == [gap, fork, other]
    assert await db.list_chain_events(SITE, DEVICE, 1, 0) == [gap]
    assert await db.list_chain_events(SITE, DEVICE, 10, gap.id) == [fork]
    assert await db.list_chain_events("elsewhere", None, 10, 0) == []

    await db.store_proof(proof_row(2), 20, 30, 0)
    await db.store_proof(proof_row(4), 20, 30, 0)
    assert await db.settle_gaps(SITE, DEVICE, 200) == 1
    await db.store_proof(proof_row(3), 20, 30, 0)
    assert await db.settle_gaps(SITE, DEVICE, 300) == 0
    settled = await db.list_chain_events(SITE, DEVICE, 10, 0)
    assert settled[0] == dataclasses.replace(gap, resolved_at=300)
    assert settled[1] == fork  # a fork is never "settled"


async def test_room_profiles(db: database.Database) -> None:
    await provision(db)
    assert await db.get_profile(SITE, ROOM) is None
    learning = environment.Profile(
        SITE, ROOM, "learning", frozenset(), frozenset(), 10, 1, {"wifi:aa:bb": 1, "ble:x": 1}
    )
    await db.save_profile(learning, 100)
    assert await db.get_profile(SITE, ROOM) == learning
    confirmed = environment.Profile(
        SITE,
        ROOM,
        "confirmed",
        frozenset({"aa:bb:cc:dd:ee:ff", "00:11:22:33:44:55"}),
        frozenset({"ibeacon:1234"}),
        10,
        10,
        {},
    )
    await db.save_profile(confirmed, 200)
    assert await db.get_profile(SITE, ROOM) == confirmed


async def test_alerts_one_open_per_kind(db: database.Database) -> None:
    await provision(db)
    first = await db.raise_alert(SITE, DEVICE, "offline", "silent", 100)
    assert first is not None
    assert (first.kind, first.reason, first.raised_at, first.cleared_at) == (
        "offline",
        "silent",
        100,
        None,
    )
    assert await db.raise_alert(SITE, DEVICE, "offline", "still silent", 110) is None
    clock = await db.raise_alert(SITE, DEVICE, "clock", "x" * 600, 120)
    assert clock is not None and clock.reason == "x" * 500
    other = await db.raise_alert("annex", "pi-7", "offline", "silent", 130)
    assert other is not None

    assert await db.list_alerts(None, True, 10, 0) == [first, clock, other]
    assert await db.list_alerts(SITE, True, 10, 0, kind="clock") == [clock]
    assert await db.list_alerts(None, False, 2, 0) == [first, clock]
    assert await db.list_alerts(None, False, 2, clock.id) == [other]

    cleared = await db.clear_alerts(SITE, DEVICE, "offline", 200)
    assert cleared == [dataclasses.replace(first, cleared_at=200)]
    assert await db.clear_alerts(SITE, DEVICE, "offline", 210) == []
    again = await db.raise_alert(SITE, DEVICE, "offline", "silent again", 220)
    assert again is not None and again.id > other.id
    assert await db.list_alerts(SITE, True, 10, 0) == [clock, again]
    assert await db.list_alerts(SITE, False, 10, 0, kind="offline") == [
        dataclasses.replace(first, cleared_at=200),
        again,
    ]

    assert await db.clear_alert(clock.id, 300) == dataclasses.replace(clock, cleared_at=300)
    assert await db.clear_alert(clock.id, 310) is None
    assert await db.clear_alert(10_000, 310) is None


async def test_silent_devices(db: database.Database) -> None:
    await provision(db)
    await db.add_device(SITE, ROOM, "pi-quiet", "code", 2_000)  # never sent a proof
    await db.store_proof(proof_row(1), 20, 30, 0)
    last = proof_row(1).received_at
    assert await db.silent_devices(last + 60_000 + 5_000, 5_000) == []
    silent = await db.silent_devices(last + 60_000 + 5_001, 5_000)
    assert [d.device for d in silent] == [DEVICE]


async def test_rejections_are_counted_and_the_newest_listed(db: database.Database) -> None:
    for index in range(60):
        reason = "malformed" if index % 3 else "duplicate"
        await db.count_rejection(reason, f"roomproof/v1/{SITE}/pi-{index}/proof", index, index)
    await db.count_rejection("topic_mismatch", "t" * 400, 7, 1_000)
    counts, recent = await db.rejections()
    assert counts == {"malformed": 40, "duplicate": 20, "topic_mismatch": 1}
    assert len(recent) == 50
    assert recent[0] == {"at": 1_000, "topic": "t" * 256, "reason": "topic_mismatch", "size": 7}
    assert recent[1] == {
        "at": 59,
        "topic": f"roomproof/v1/{SITE}/pi-59/proof",
        "reason": "malformed",
        "size": 59,
    }
    assert [row["at"] for row in recent[1:]] == list(range(59, 10, -1))


def checkin_context(
    student: str, browser: str, credential: str | None = None, now_ms: int = 5_000
) -> store.CheckinContext:
    return store.CheckinContext(
        credential_id=credential,
        browser=browser,
        student_id=student,
        session_id=7,
        session_date="2027-03-22",
        room=ROOM,
        since_ms=0,
        now_ms=now_ms,
    )


def deciding(student: str, slot: int, seen: list[int]) -> store.DecideCheckin:
    """A decision that records the same-browser count it was given and flags a shared phone."""

    def decide(others: int) -> store.NewCheckin:
        seen.append(others)
        new = new_checkin(student, slot, 7, "2027-03-22", "phone")
        return dataclasses.replace(new, status="flagged" if others else "present")

    return decide


async def test_record_checkin_counts_checks_and_inserts_in_one_step(db: database.Database) -> None:
    await provision(db)
    await db.add_credential("cred-1", SITE, "s1", 100, 10_000)
    seen: list[int] = []
    first = await db.record_checkin(
        checkin_context("s1", "phone", "cred-1"), deciding("s1", 10, seen)
    )
    assert (first.student_id, first.status, seen) == ("s1", "present", [0])
    assert await db.get_checkin(first.id) == first

    # Ten students on one phone at the same instant: each counts the ones stored before it.
    seen.clear()
    many = await asyncio.gather(
        *(
            db.record_checkin(checkin_context(f"t{n}", "phone"), deciding(f"t{n}", 10, seen))
            for n in range(10)
        )
    )
    assert sorted(seen) == list(range(1, 11))
    assert {c.status for c in many} == {"flagged"}
    assert len({c.id for c in many}) == 10

    with pytest.raises(store.Conflict):  # once per student per occurrence
        await db.record_checkin(checkin_context("s1", "other"), deciding("s1", 11, []))
    await db.revoke_credential("cred-1")
    with pytest.raises(store.CredentialInactive):
        await db.record_checkin(checkin_context("s9", "other", "cred-1"), deciding("s9", 10, seen))
    with pytest.raises(store.CredentialInactive):  # unknown or expired: the same
        await db.record_checkin(
            checkin_context("s9", "other", "cred-none"), deciding("s9", 10, seen)
        )

    def broken(others: int) -> store.NewCheckin:
        raise ValueError("a bug in the decision")

    good, bad = await asyncio.gather(
        db.record_checkin(checkin_context("u1", "p2"), deciding("u1", 10, [])),
        db.record_checkin(checkin_context("u2", "p3"), broken),
        return_exceptions=True,
    )
    assert isinstance(good, store.Checkin) and isinstance(bad, ValueError)
    stored = await db.occurrence_checkins(7, "2027-03-22")
    assert sorted(c.student_id for c in stored) == sorted(
        ["s1", "u1", *(f"t{n}" for n in range(10))]
    )


async def test_students_credentials_and_admin_tokens(db: database.Database) -> None:
    with pytest.raises(store.NotFound):
        await db.add_student(SITE, "s1", "hash")
    await db.add_site(SITE, "Main campus")
    await db.add_student(SITE, "s1", "argon2-hash")
    with pytest.raises(store.Conflict):
        await db.add_student(SITE, "s1", "other")
    assert await db.get_student(SITE, "s1") == store.Student(SITE, "s1", "argon2-hash")
    assert await db.get_student(SITE, "s2") is None

    await db.add_credential("cred-1", SITE, "s1", 100, 1_000)
    with pytest.raises(store.Conflict):
        await db.add_credential("cred-1", SITE, "s1", 100, 1_000)
    assert await db.credential_active("cred-1", 999) is True
    assert await db.credential_active("cred-1", 1_000) is False  # expired
    assert await db.credential_active("cred-2", 500) is False
    await db.revoke_credential("cred-1")
    assert await db.credential_active("cred-1", 500) is False
    await db.revoke_credential("cred-unknown")  # nothing to revoke is not an error

    await db.add_admin_token("h" * 64, "teacher", "ms smith", 100)
    with pytest.raises(store.Conflict):
        await db.add_admin_token("h" * 64, "admin", "again", 100)
    assert await db.admin_role("h" * 64) == "teacher"
    assert await db.admin_role("x" * 64) is None


async def test_checkins_once_per_slot_and_per_occurrence(db: database.Database) -> None:
    await provision(db)
    first = await db.add_checkin(new_checkin("s1", 10, browser="b1"))
    assert first.id > 0
    assert first == store.Checkin(
        id=first.id,
        site=SITE,
        room=ROOM,
        device=DEVICE,
        student_id="s1",
        slot=10,
        method="qr",
        created_at=5_000,
        token_age_ms=1_200,
        status="present",
        flags=("shared_browser", "off_campus"),
        evidence={"verdict": "weak", "network": "unknown", "age": 3, "band": {"z": 1, "a": 2}},
    )
    stored = await db.get_checkin(first.id)
    assert stored == first
    assert stored is not None
    assert list(stored.evidence) == ["verdict", "network", "age", "band"]
    assert list(stored.evidence["band"]) == ["z", "a"]
    assert await db.get_checkin(first.id + 1000) is None
    with pytest.raises(store.Conflict):  # same student, device and slot
        await db.add_checkin(new_checkin("s1", 10))

    in_session = await db.add_checkin(new_checkin("s1", 11, 7, "2027-03-22", "b1", 6_000))
    assert (in_session.session_id, in_session.session_date) == (7, "2027-03-22")
    with pytest.raises(store.Conflict):  # once per student per occurrence, whatever the slot
        await db.add_checkin(new_checkin("s1", 12, 7, "2027-03-22"))
    await db.add_checkin(new_checkin("s1", 13, 7, "2027-03-29"))  # next week's occurrence
    await db.add_checkin(new_checkin("s2", 11, 7, "2027-03-22", "b1", 6_100))
    await db.add_checkin(new_checkin("s1", 14))  # without a session: no such rule

    assert [c.student_id for c in await db.occurrence_checkins(7, "2027-03-22")] == ["s1", "s2"]
    assert await db.occurrence_checkins(8, "2027-03-22") == []
    # Browser b1 checked in s1 and s2: for s3 that is two others, for s1 one.
    assert await db.browser_students("b1", "s3", 7, "2027-03-22", ROOM, 0) == 2
    assert await db.browser_students("b1", "s1", 7, "2027-03-22", ROOM, 0) == 1
    assert await db.browser_students("b1", "s3", None, None, ROOM, 0) == 2
    assert await db.browser_students("b1", "s3", None, None, ROOM, 6_050) == 1
    assert await db.browser_students("b1", "s3", None, None, "b-1", 0) == 0
    assert await db.browser_students("b2", "s3", None, None, ROOM, 0) == 0

    assert await db.set_checkout(in_session.id, 9_000) is True
    assert await db.set_checkout(in_session.id, 9_500) is False
    out = await db.get_checkin(in_session.id)
    assert out is not None and out.checked_out_at == 9_000

    assert await db.set_record_jws(first.id, "record-a") == "record-a"
    assert await db.set_record_jws(first.id, "record-b") == "record-a"  # first signature wins
    signed = await db.get_checkin(first.id)
    assert signed is not None and signed.record_jws == "record-a"


async def test_checkin_lists_filter_and_page(db: database.Database) -> None:
    await provision(db)
    ids = []
    for index in range(7):
        student = f"s{index % 3}"
        room = ROOM if index < 5 else "b-1"
        checkin = await db.add_checkin(
            new_checkin(student, 100 + index, created_at=1_000 * index, room=room)
        )
        ids.append(checkin.id)
    everything = await db.list_checkins(None, None, None, 100)
    assert [c.id for c in everything] == ids
    page = await db.list_checkins(SITE, None, None, 3)
    assert [c.id for c in page] == ids[:3]
    page = await db.list_checkins(SITE, None, None, 3, after_id=page[-1].id)
    assert [c.id for c in page] == ids[3:6]
    assert [c.id for c in await db.list_checkins(SITE, "b-1", None, 10)] == ids[5:]
    assert [c.id for c in await db.list_checkins(None, None, 4_000, 10)] == ids[4:]
    assert [c.id for c in await db.list_checkins(None, ROOM, None, 10, 0, "s1")] == [
        ids[1],
        ids[4],
    ]
    assert await db.list_checkins("elsewhere", None, None, 10) == []


async def test_courses_rosters_sessions_and_overrides(db: database.Database) -> None:
    await provision(db)
    with pytest.raises(store.NotFound):
        await db.add_course(store.Course("nowhere", "cs-1", "CS", "UTC"))
    law = store.Course(SITE, "law-1", "Law", "Europe/Berlin")
    await db.add_course(law)
    await db.add_course(store.Course(SITE, "cs-1", "CS", "UTC"))
    with pytest.raises(store.Conflict):
        await db.add_course(store.Course(SITE, "law-1", "Law again", "UTC"))
    assert await db.get_course(SITE, "law-1") == law
    assert await db.get_course(SITE, "nope") is None
    assert [c.course for c in await db.list_courses(SITE)] == ["cs-1", "law-1"]
    assert await db.list_courses("elsewhere") == []

    await db.set_roster(SITE, "law-1", ["s3", "s1", "s2", "s1"])
    assert await db.roster(SITE, "law-1") == ["s1", "s2", "s3"]
    await db.set_roster(SITE, "law-1", ["s2", "s4"])  # replaces, never merges
    assert await db.roster(SITE, "law-1") == ["s2", "s4"]
    await db.set_roster(SITE, "cs-1", ["s2"])
    assert await db.courses_of(SITE, "s2") == ["cs-1", "law-1"]
    assert await db.courses_of(SITE, "s9") == []
    with pytest.raises(store.Conflict):
        await db.set_roster(SITE, "no-course", ["s1"])
    assert await db.roster(SITE, "no-course") == []

    template = timetable.Session(
        id=0,
        site=SITE,
        course="law-1",
        room=ROOM,
        timezone="Europe/Berlin",
        first_date=datetime.date(2027, 3, 22),
        start=datetime.time(9, 0),
        end=datetime.time(10, 30),
        weekly=True,
        until=datetime.date(2027, 6, 30),
        grace_min=5,
        checkout=False,
    )
    weekly = await db.add_session(template)
    assert weekly.id > 0 and weekly == dataclasses.replace(template, id=weekly.id)
    assert await db.get_session(weekly.id) == weekly
    assert await db.get_session(weekly.id + 100) is None
    once = await db.add_session(
        dataclasses.replace(template, course="cs-1", weekly=False, until=None, checkout=True)
    )
    assert await db.get_session(once.id) == once
    with pytest.raises(store.NotFound):
        await db.add_session(dataclasses.replace(template, course="no-course"))
    with pytest.raises(store.NotFound):
        await db.add_session(dataclasses.replace(template, room="no-room"))
    assert await db.list_sessions(SITE, None, None, 10, 0) == [weekly, once]
    assert await db.list_sessions(None, "cs-1", None, 10, 0) == [once]
    assert await db.list_sessions(None, None, ROOM, 1, 0) == [weekly]
    assert await db.list_sessions(None, None, ROOM, 1, weekly.id) == [once]
    assert await db.list_sessions(None, None, "b-1", 10, 0) == []

    excused = store.Override(weekly.id, "2027-03-22", "s4", "excused", "ill", "teacher", 100)
    await db.set_override(excused)
    await db.set_override(store.Override(weekly.id, "2027-03-22", "s2", "late", "", "t", 110))
    changed = dataclasses.replace(excused, status="present", note="was there", set_at=120)
    await db.set_override(changed)  # the same student and occurrence: replaced
    assert await db.overrides(weekly.id, "2027-03-22") == [
        store.Override(weekly.id, "2027-03-22", "s2", "late", "", "t", 110),
        changed,
    ]
    assert await db.overrides(weekly.id, "2027-03-29") == []
    with pytest.raises(store.Conflict):
        await db.set_override(dataclasses.replace(excused, session_id=weekly.id + 100))


async def test_verification_links(db: database.Database) -> None:
    await provision(db)
    checkin = await db.add_checkin(new_checkin("s1", 10))
    link = await db.add_link("t" * 64, checkin.id, 100, 1_000)
    assert link == store.VerifyLink(link.id, checkin.id, 100, 1_000, None)
    second = await db.add_link("u" * 64, checkin.id, 200, 2_000)
    assert second.id > link.id
    assert await db.find_link("t" * 64) == link
    assert await db.find_link("v" * 64) is None
    assert await db.revoke_link(link.id, 500) is True
    assert await db.revoke_link(link.id, 600) is False
    assert await db.revoke_link(second.id + 100, 600) is False
    assert await db.find_link("t" * 64) == dataclasses.replace(link, revoked_at=500)


async def test_data_survives_reopening(backend: conftest.Backend) -> None:
    first = backend.make()
    await first.open()
    await provision(first)
    await first.store_proof(proof_row(1), 20, 30, 0)
    await first.close()
    again = backend.make()
    await again.open()  # the schema is there already: opening migrates nothing
    try:
        assert await again.get_proof(SITE, DEVICE, 1) == proof_row(1)
        assert [d.device for d in await again.list_devices(SITE)] == [DEVICE]
    finally:
        await again.close()


async def test_one_handle_stores_concurrent_duplicates_once(db: database.Database) -> None:
    """One handle, many tasks: in one process the HTTP handlers and the bridge share it."""
    await provision(db)

    async def attempt(seq: int) -> bool:
        try:
            await db.store_proof(proof_row(seq), 20, 30, 0)
        except store.Conflict:
            return False
        return True

    outcomes = await asyncio.gather(*(attempt(1) for _ in range(20)))
    assert outcomes.count(True) == 1
    assert await db.get_proof(SITE, DEVICE, 1) == proof_row(1)

    # Seqs 2..31, each sent three times, all at once and out of order.
    seqs = [seq for seq in range(31, 1, -1) for _ in range(3)]
    outcomes = await asyncio.gather(*(attempt(seq) for seq in seqs))
    assert outcomes.count(True) == 30
    stored = [p.seq for p in await db.list_proofs(SITE, DEVICE, 100)]
    assert stored == list(range(31, 0, -1))
    head = await db.get_device(SITE, DEVICE)
    assert head is not None and (head.last_seq, head.last_hash) == (31, f"{31:064x}")


async def test_concurrent_uniqueness_rules(db: database.Database) -> None:
    """Counters add up, one alert stays open, one check-in, one countersignature, one
    enrollment: whatever runs at the same moment."""
    await provision(db)
    await asyncio.gather(*(db.count_rejection("duplicate", "t", 1, n) for n in range(40)))
    counts, _ = await db.rejections()
    assert counts == {"duplicate": 40}

    raised = await asyncio.gather(
        *(db.raise_alert(SITE, DEVICE, "offline", "silent", n) for n in range(10))
    )
    assert len([alert for alert in raised if alert is not None]) == 1
    cleared = await asyncio.gather(
        *(db.clear_alerts(SITE, DEVICE, "offline", 100 + n) for n in range(10))
    )
    assert sum(len(batch) for batch in cleared) == 1  # reported as cleared exactly once

    async def check_in() -> bool:
        try:
            await db.add_checkin(new_checkin("s1", 10))
        except store.Conflict:
            return False
        return True

    assert (await asyncio.gather(*(check_in() for _ in range(10)))).count(True) == 1
    (checkin,) = await db.list_checkins(SITE, None, None, 10)
    signatures = await asyncio.gather(
        *(db.set_record_jws(checkin.id, f"record-{n}") for n in range(10))
    )
    assert len(set(signatures)) == 1

    await db.add_device(SITE, ROOM, "pi-new", "code", 2_000)

    async def bind() -> bool:
        try:
            await db.bind_device(SITE, "pi-new", b"\x05" * 32, b"\x06" * 32, 1)
        except store.Conflict:
            return False
        return True

    assert (await asyncio.gather(*(bind() for _ in range(10)))).count(True) == 1


async def test_admin_tokens_are_listed_by_id_and_revoked(db: database.Database) -> None:
    await db.add_admin_token("ab" * 32, "admin", "it desk", 1_000)
    await db.add_admin_token("cd" * 32, "auditor", "prometheus", 2_000)
    listed = await db.list_admin_tokens()
    assert [(t.id, t.role, t.name, t.created_at) for t in listed] == [
        ("abababababab", "admin", "it desk", 1_000),
        ("cdcdcdcdcdcd", "auditor", "prometheus", 2_000),
    ]
    assert not await db.revoke_admin_token("abab")  # too short to name one token
    assert not await db.revoke_admin_token("ABABABABABAB")
    assert await db.revoke_admin_token("abababababab")
    assert await db.admin_role("ab" * 32) is None
    assert await db.admin_role("cd" * 32) == "auditor"
    assert not await db.revoke_admin_token("abababababab")


async def test_erasing_a_student_removes_them_and_only_them(db: database.Database) -> None:
    await provision(db)
    await db.add_course(store.Course(SITE, "law-101", "Law", "UTC"))
    for student in ("s1", "s2"):
        await db.add_student(SITE, student, f"hash-{student}")
        await db.add_credential(f"cred-{student}", SITE, student, 1, 10**13)
    await db.set_roster(SITE, "law-101", ["s1", "s2"])
    mine = await db.add_checkin(new_checkin("s1", 10))
    theirs = await db.add_checkin(new_checkin("s2", 10))
    await db.add_link("h" * 64, mine.id, 1, 10**13)
    await db.add_link("g" * 64, theirs.id, 1, 10**13)
    deleted = await db.erase_student(SITE, "s1")
    assert deleted == {
        "verify_links": 1,
        "checkins": 1,
        "attendance_overrides": 0,
        "enrolments": 1,
        "credentials": 1,
        "students": 1,
    }
    assert await db.get_student(SITE, "s1") is None
    assert await db.get_checkin(mine.id) is None
    assert await db.find_link("h" * 64) is None
    assert not await db.credential_active("cred-s1", 2)
    assert await db.roster(SITE, "law-101") == ["s2"]
    assert await db.get_checkin(theirs.id) is not None
    assert await db.find_link("g" * 64) is not None
    assert await db.credential_active("cred-s2", 2)
    assert await db.erase_student(SITE, "s1") == dict.fromkeys(deleted, 0)


async def test_audit_log_keeps_order_and_pages(db: database.Database) -> None:
    for n in range(3):
        await db.audit("admin:abc", f"action-{n}", "site/room", "x" * 2000, 1_000 + n)
    first = await db.list_audit(2, 0)
    assert [e.action for e in first] == ["action-0", "action-1"]
    assert len(first[0].detail) == 1000  # bounded
    rest = await db.list_audit(2, first[-1].id)
    assert [e.action for e in rest] == ["action-2"] and rest[0].at == 1_002


async def test_retention_purges_details_and_keeps_records(db: database.Database) -> None:
    await provision(db)
    await db.add_student(SITE, "s1", "hash")
    old_proof = proof_row(1, slot=10)
    await db.store_proof(old_proof, 20, 30, 0)
    evidence_proof = proof_row(2, slot=11)
    await db.store_proof(evidence_proof, 20, 30, 0)
    new = new_checkin("s1", 11, browser="b" * 32)
    old = await db.add_checkin(
        dataclasses.replace(
            new,
            evidence={"network": "off_campus", "browser_students": 2, "device_verdict": "verified"},
        )
    )
    purged = await db.purge_before(10**13)
    assert purged == {"checkins": 1, "proofs": 1}
    kept = await db.get_checkin(old.id)
    assert kept is not None and kept.status == old.status and kept.flags == old.flags
    assert kept.evidence == {"device_verdict": "verified"}
    assert await db.browser_students("b" * 32, "s2", None, None, ROOM, 0) == 0
    stripped = await db.get_proof(SITE, DEVICE, 1)
    assert stripped is not None and stripped.jws == "" and stripped.hash == old_proof.hash
    assert stripped.verdict == old_proof.verdict
    needed = await db.get_proof(SITE, DEVICE, 2)
    assert needed is not None and needed.jws == evidence_proof.jws  # a check-in's evidence
    assert await db.purge_before(10**13) == {"checkins": 0, "proofs": 0}


async def test_teacher_tokens_carry_their_courses(db: database.Database) -> None:
    await provision(db)
    await db.add_admin_token(
        "ef" * 32, "teacher", "ms. a", 1, (("campus", "law"), ("campus", "art"))
    )
    assert await db.token_courses("ef" * 32) == frozenset({("campus", "law"), ("campus", "art")})
    (token,) = await db.list_admin_tokens()
    assert token.courses == ("campus/art", "campus/law")
    assert await db.revoke_admin_token("efefefefefef")
    assert await db.token_courses("ef" * 32) == frozenset()


async def test_tokens_audit_and_webhooks_belong_to_a_site(db: database.Database) -> None:
    """Sealed sites (issue 13): every list and revocation can be limited to one site."""
    await provision(db)
    await db.add_site("north", "North")
    await db.add_admin_token("a1" * 32, "admin", "campus it", 1, (), SITE)
    await db.add_admin_token("b2" * 32, "auditor", "north audit", 2, (), "north")
    await db.add_admin_token("c3" * 32, "operator", "noc", 3)
    assert await db.admin_grant("a1" * 32) == store.TokenGrant("admin", SITE)
    assert await db.admin_grant("c3" * 32) == store.TokenGrant("operator", None)
    assert await db.admin_grant("d4" * 32) is None
    assert [t.id for t in await db.list_admin_tokens(SITE)] == ["a1a1a1a1a1a1"]
    assert [t.site for t in await db.list_admin_tokens()] == [SITE, "north", None]
    assert not await db.revoke_admin_token("b2b2b2b2b2b2", SITE)  # another site's
    assert not await db.revoke_admin_token("c3c3c3c3c3c3", SITE)  # an operator's
    assert await db.revoke_admin_token("b2b2b2b2b2b2", "north")
    assert await db.set_token_site("a1a1a1a1a1a1", "auditor", "north")
    assert await db.admin_grant("a1" * 32) == store.TokenGrant("auditor", "north")
    assert not await db.set_token_site("e5e5e5e5e5e5", "admin", SITE)

    await db.audit("admin:a", "one", "campus/x", "", 1, SITE)
    await db.audit("admin:b", "two", "north/x", "", 2, "north")
    await db.audit("cli:root", "three", "x", "", 3)
    assert [e.action for e in await db.list_audit(10, 0, SITE)] == ["one"]
    assert [(e.action, e.site) for e in await db.list_audit(10, 0)] == [
        ("one", SITE),
        ("two", "north"),
        ("three", None),
    ]

    mine = await db.add_webhook("https://a.example/", ("checkin",), "", "s", 1, SITE)
    theirs = await db.add_webhook("https://b.example/", ("checkin",), "", "s", 1, "north")
    every = await db.add_webhook("https://c.example/", ("checkin",), "", "s", 1)
    assert [w.id for w in await db.list_webhooks(SITE)] == [mine.id]
    assert [w.site for w in await db.list_webhooks()] == [SITE, "north", None]
    assert await db.enqueue_webhook_event("evt_1", "checkin", "{}", 5, SITE) == 2
    assert await db.webhooks_due(5) == [mine.id, every.id]
    assert await db.enqueue_webhook_event("evt_2", "checkin", "{}", 5, None) == 1
    assert theirs.id not in await db.webhooks_due(5)

    await db.add_student(SITE, "s1", "hash")
    checkin = await db.add_checkin(new_checkin("s1", 10))
    link = await db.add_link("h" * 64, checkin.id, 1, 10**13)
    assert await db.get_link(link.id) == link
    assert await db.get_link(link.id + 1) is None


async def _forget_sites(db: database.Database) -> None:
    """Puts the database back to the schema before sites were sealed (no site columns), as
    the old stores recorded it (their version table instead of Alembic's)."""
    await _forget_key_notes(db)
    assert isinstance(db, database.Database)
    if db.path is not None:
        with contextlib.closing(sqlite3.connect(db.path)) as raw:
            raw.execute("DROP INDEX audit_log_site")
            for table in ("admin_tokens", "audit_log", "webhooks"):
                raw.execute(f"ALTER TABLE {table} DROP COLUMN site")
            raw.execute("DROP TABLE alembic_version")
            raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            raw.execute("INSERT INTO schema_version VALUES (8)")
            raw.commit()
        return
    assert db.dsn is not None
    conn = await asyncpg.connect(db.dsn)
    try:
        await conn.execute("DROP INDEX audit_log_site")
        for table in ("admin_tokens", "audit_log", "webhooks"):
            await conn.execute(f"ALTER TABLE {table} DROP COLUMN site")
        await conn.execute("DROP TABLE alembic_version")
        await conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
        )
        await conn.execute("INSERT INTO schema_version SELECT v, 0 FROM generate_series(1, 5) v")
    finally:
        await conn.close()


async def _forget_key_notes(db: database.Database) -> None:
    """Puts the database back to the schema before TOTP digests and key-history notes (and
    before enrollment evidence was backfilled): Alembic's revision 0001."""
    undo = (
        "ALTER TABLE devices DROP COLUMN otp_digest",
        "ALTER TABLE device_keys DROP COLUMN note",
        "UPDATE alembic_version SET version_num = '0001'",
    )
    assert isinstance(db, database.Database)
    if db.path is not None:
        with contextlib.closing(sqlite3.connect(db.path)) as raw:
            for statement in undo:
                raw.execute(statement)
            raw.commit()
        return
    assert db.dsn is not None
    conn = await asyncpg.connect(db.dsn)
    try:
        for statement in undo:
            await conn.execute(statement)
    finally:
        await conn.close()


OLD_AUDIT = (
    "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (1, 'a', 'b', 'c', '')"
)
OLD_WEBHOOK = (
    "INSERT INTO webhooks (url, events, description, secret, created_at)"
    " VALUES ('https://x.example/', {events}, '', 's', 1)"
)


@pytest.mark.parametrize("sites", [("campus",), ("campus", "north")])
async def test_sealing_sites_migrates_what_came_before(
    backend: conftest.Backend, sites: tuple[str, ...]
) -> None:
    """With one site, site-less admin tokens become operators and auditors, teachers, audit
    entries and webhooks get that site; with several, only teachers whose courses are of
    one site get it (the rest is for `central token migrate`)."""
    db = backend.make()
    await db.open()
    for site in sites:
        await db.add_site(site, site)
        await db.add_course(store.Course(site, "law", "Law", "UTC"))
    await db.close()
    await _forget_sites(db)
    # rows written by the previous version, straight into its tables
    assert isinstance(db, database.Database)
    if db.path is not None:
        with contextlib.closing(sqlite3.connect(db.path)) as raw:
            for token, role in (("a", "admin"), ("b", "auditor"), ("c", "teacher")):
                raw.execute(
                    "INSERT INTO admin_tokens (hash, role, name, created_at) VALUES (?, ?, '', 1)",
                    (token * 64, role),
                )
            raw.execute("INSERT INTO token_courses VALUES (?, 'campus', 'law')", ("c" * 64,))
            raw.execute(OLD_AUDIT)
            raw.execute(OLD_WEBHOOK.format(events="'[\"checkin\"]'"))
            raw.commit()
    else:
        assert db.dsn is not None
        conn = await asyncpg.connect(db.dsn)
        try:
            for token, role in (("a", "admin"), ("b", "auditor"), ("c", "teacher")):
                await conn.execute(
                    "INSERT INTO admin_tokens (hash, role, name, created_at)"
                    " VALUES ($1, $2, '', 1)",
                    token * 64,
                    role,
                )
            await conn.execute("INSERT INTO token_courses VALUES ($1, 'campus', 'law')", "c" * 64)
            await conn.execute(OLD_AUDIT)
            await conn.execute(OLD_WEBHOOK.format(events="'{checkin}'"))
        finally:
            await conn.close()
    upgraded = backend.make()
    await upgraded.open()
    try:
        tokens = {t.id[0]: (t.role, t.site) for t in await upgraded.list_admin_tokens()}
        (entry,) = await upgraded.list_audit(10, 0)
        (hook,) = await upgraded.list_webhooks()
    finally:
        await upgraded.close()
    if len(sites) == 1:
        assert tokens == {
            "a": ("operator", None),
            "b": ("auditor", "campus"),
            "c": ("teacher", "campus"),
        }
        assert entry.site == "campus" and hook.site == "campus"
    else:
        assert tokens == {"a": ("admin", None), "b": ("auditor", None), "c": ("teacher", "campus")}
        assert entry.site is None and hook.site is None


async def test_first_keys_are_backfilled_with_the_best_evidence_left(
    backend: conftest.Backend,
) -> None:
    """Devices enrolled before central kept enrollment requests get, at the upgrade, the
    earliest stored proof their first key signed as evidence (or none), with a note why;
    evidence central already holds is left alone."""
    db = backend.make()
    await db.open()
    try:
        await provision(db)  # pi-1: proofs 2 and 3 stored under its first key
        await db.add_device(SITE, ROOM, "pi-2", "code", 2_000_000)
        await db.bind_device(SITE, "pi-2", b"\x03" * 32, b"\x04" * 32, 1_000)  # no proof
        await db.add_device(SITE, ROOM, "pi-3", "code", 2_000_000)
        await db.bind_device(SITE, "pi-3", b"\x05" * 32, b"\x06" * 32, 1_000, "eyJ.kept.x")
        for seq in (3, 2):
            await db.store_proof(proof_row(seq), 20, 30, 0)
        await db.store_proof(dataclasses.replace(proof_row(1), jws=""), 20, 30, 0)  # purged
        await db.change_device_keys(
            store.DeviceKey(0, SITE, DEVICE, ROOM, 5, b"\x07" * 32, b"\x08" * 32, "rotate", 9, "k"),
            b"\x01" * 32,
            None,
        )
        await db.store_proof(proof_row(6), 20, 30, 0)  # the second key's
    finally:
        await db.close()
    await _forget_key_notes(db)
    db = backend.make()
    await db.open()
    try:
        first = (await db.device_keys(SITE, DEVICE))[0]
        assert (first.kind, first.evidence) == ("enroll", proof_row(2).jws)
        assert first.note == store.NOTE_BACKFILL_PROOF
        assert [(k.kind, k.evidence, k.note) for k in (await db.device_keys(SITE, DEVICE))[1:]] == [
            ("rotate", "k", "")
        ]
        none = (await db.device_keys(SITE, "pi-2"))[0]
        assert (none.kind, none.evidence, none.note) == ("enroll", "", store.NOTE_BACKFILL_NONE)
        kept = (await db.device_keys(SITE, "pi-3"))[0]
        assert (kept.evidence, kept.note) == ("eyJ.kept.x", "")
    finally:
        await db.close()
