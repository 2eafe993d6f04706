"""What a central made by an older version holds, written through that version's own store,
and every read of the Store API over it, as JSON: make_fixtures.py runs `populate` and
`reads` under main's code, test_upgrade.py runs `reads` on the upgraded database. Only the
Store API is used, so this module runs on both sides unchanged."""

from __future__ import annotations

import dataclasses
import datetime
import typing

from central.domain import environment
from central.domain import timetable
from central.storage import database
from central.storage import store

SITE, ROOM, OTHER_ROOM, DEVICE = "campus", "a-101", "b-202", "pi-1"
FAR = 10**13
DATE = "2026-09-01"


async def populate(db: database.Database) -> None:
    """At least one row in every table, with the values that need converting (keys, JSON,
    flags, dates and times, NULLs)."""
    await db.add_site(SITE, "Main campus")
    await db.add_site("north", "North campus")
    await db.add_room(SITE, ROOM, "Hall A-101", 48.15, 11.57, 50.0)
    await db.add_room(SITE, OTHER_ROOM, "Room B-202", None, None, 30.0)
    await db.add_device(SITE, ROOM, DEVICE, "code-1", FAR)
    await db.bind_device(SITE, DEVICE, b"\x01" * 32, b"\x02" * 32, 1_000)
    await db.add_device(SITE, OTHER_ROOM, "pi-2", "code-2", FAR)
    for seq in (1, 2, 4, 5):
        await db.store_proof(
            store.ProofRow(
                SITE,
                DEVICE,
                seq,
                100 + seq,
                1_000_000 + seq,
                1_000_100 + seq,
                f"jws-{seq}",
                f"hash-{seq}",
                seq == 4,
                "suspect" if seq == 5 else "ok",
                ("wifi_mismatch", "ble_missing") if seq == 5 else (),
            ),
            30,
            30,
            -7,
        )
    await db.set_online(SITE, DEVICE, True, 2_000)
    await db.add_chain_event(SITE, DEVICE, "gap", 3, 3, "", 3_000)
    await db.add_chain_event(SITE, DEVICE, "fork", 2, 2, "other-jws", 3_100)
    await db.settle_gaps(SITE, DEVICE, 3_200)
    await db.change_device_keys(
        store.DeviceKey(
            0, SITE, DEVICE, ROOM, 6, b"\x03" * 32, b"\x04" * 32, "rotate", 4_000, "kc"
        ),
        b"\x01" * 32,
        None,
    )
    await db.arm_reenroll(SITE, DEVICE, "re-code", FAR, OTHER_ROOM)
    await db.save_profile(
        environment.Profile(
            SITE,
            ROOM,
            "learning",
            frozenset({"aa:bb"}),
            frozenset({"ble-1"}),
            10,
            3,
            {"wifi:aa:bb": 3},
        ),
        5_000,
    )
    await db.raise_alert(SITE, DEVICE, "offline", "silent for 3 slots", 6_000)
    await db.raise_alert(SITE, DEVICE, "clock", "skew", 6_100)
    await db.clear_alerts(SITE, DEVICE, "clock", 6_200)
    for reason in ("bad_signature", "bad_signature", "unknown_device"):
        await db.count_rejection(reason, f"roomproof/{SITE}/x/proof", 120, 7_000)
    await db.add_student(SITE, "s1", "pin-hash-1")
    await db.add_student(SITE, "s2", "pin-hash-2")
    await db.add_credential("cred-1", SITE, "s2", 8_000, FAR)
    await db.add_credential("cred-old", SITE, "s1", 8_000, 8_500)
    await db.add_course(store.Course(SITE, "law", "Law", "Europe/Berlin"))
    await db.set_roster(SITE, "law", ["s2", "s1"])
    await db.add_admin_token("a" * 64, "operator", "ops", 9_000)
    await db.add_admin_token("b" * 64, "teacher", "Dr T", 9_100, ((SITE, "law"),), SITE)
    session = await db.add_session(
        timetable.Session(
            0,
            SITE,
            "law",
            ROOM,
            "Europe/Berlin",
            datetime.date(2026, 9, 1),
            datetime.time(9, 0),
            datetime.time(10, 30),
            True,
            datetime.date(2026, 12, 20),
            10,
            False,
        )
    )
    first = await db.add_checkin(
        store.NewCheckin(
            SITE,
            ROOM,
            DEVICE,
            "s1",
            101,
            "qr",
            10_000,
            500,
            "present",
            (),
            {"proof": {"seq": 1}, "network": {"ip": "10.0.0.7"}, "browser_students": 0},
            "browser-1",
            session.id,
            DATE,
        )
    )

    def decide(others: int) -> store.NewCheckin:
        return store.NewCheckin(
            SITE, ROOM, DEVICE, "s2", 102, "remembered", 10_100, 900, "flagged",
            ("shared_browser",), {"browser_students": others}, "browser-1", session.id, DATE,
        )  # fmt: skip

    await db.record_checkin(
        store.CheckinContext("cred-1", "browser-1", "s2", session.id, DATE, ROOM, 0, 10_100), decide
    )
    await db.set_checkout(first.id, 11_000)
    await db.set_record_jws(first.id, "record-jws")
    await db.set_override(
        store.Override(session.id, DATE, "s2", "present", "checked by hand", "token:bbbb", 12_000)
    )
    await db.add_link("l" * 64, first.id, 13_000, FAR)
    hook = await db.add_webhook(
        "https://hooks.example/a", ("checkin",), "LMS", "secret", 14_000, SITE
    )
    await db.add_webhook("https://hooks.example/b", ("session_closed",), "", "s2", 14_100)
    await db.enqueue_webhook_event("evt-1", "checkin", '{"id": 1}', 15_000, SITE)
    (delivery,) = await db.due_webhook_deliveries(hook.id, 15_000, 10)
    await db.record_webhook_attempt(delivery.id, 500, "server error", 16_000, None)
    await db.set_webhook_cursor("checkins", first.id)
    await db.audit("cli", "site.add", SITE, "created", 17_000, SITE)
    await db.audit("token:aaaa", "token.add", "ops", "", 17_100)


def jsonable(value: typing.Any) -> typing.Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, frozenset | set):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return value


async def reads(db: database.Database) -> dict[str, typing.Any]:
    """Every read of the Store API over what `populate` wrote."""
    checkins = await db.list_checkins(None, None, None, 100, 0)
    sessions = await db.list_sessions(None, None, None, 100, 0)
    webhooks = await db.list_webhooks()
    found: dict[str, typing.Any] = {
        "rooms": await db.list_rooms(None),
        "room": await db.get_room(SITE, ROOM),
        "devices": await db.list_devices(),
        "room_devices": await db.room_devices(SITE, ROOM),
        "device": await db.get_device(SITE, DEVICE),
        "device_keys": await db.device_keys(SITE, DEVICE),
        "device_key_at_5": await db.device_key_at(SITE, DEVICE, 5),
        "device_key_at_6": await db.device_key_at(SITE, DEVICE, 6),
        "reenroll_room": await db.reenroll_room(SITE, DEVICE),
        "proofs": await db.list_proofs(None, DEVICE, 100),
        "proof_5": await db.get_proof(SITE, DEVICE, 5),
        "proof_hash_2": await db.proof_hash(SITE, DEVICE, 2),
        "proof_for_slot_104": await db.proof_for_slot(SITE, DEVICE, 104),
        "chain_events": await db.list_chain_events(None, None, 100, 0),
        "profile": await db.get_profile(SITE, ROOM),
        "alerts": await db.list_alerts(None, False, 100, 0),
        "open_alerts": await db.list_alerts(SITE, True, 100, 0),
        "silent_devices": await db.silent_devices(FAR, 0),
        "rejections": await db.rejections(),
        "student": await db.get_student(SITE, "s1"),
        "credential_active": await db.credential_active("cred-1", 9_000),
        "credential_expired": await db.credential_active("cred-old", 9_000),
        "admin_tokens": await db.list_admin_tokens(),
        "admin_grant": await db.admin_grant("b" * 64),
        "admin_role": await db.admin_role("a" * 64),
        "token_courses": await db.token_courses("b" * 64),
        "audit": await db.list_audit(100, 0),
        "site_audit": await db.list_audit(100, 0, SITE),
        "checkins": checkins,
        "checkin": await db.get_checkin(checkins[0].id),
        "teacher_checkins": await db.list_checkins(SITE, None, None, 100, 0, None, {(SITE, "law")}),
        "occurrence": await db.occurrence_checkins(sessions[0].id, DATE),
        "browser_students": await db.browser_students(
            "browser-1", "s3", sessions[0].id, DATE, ROOM, 0
        ),
        "courses": await db.list_courses(None),
        "course": await db.get_course(SITE, "law"),
        "roster": await db.roster(SITE, "law"),
        "courses_of": await db.courses_of(SITE, "s1"),
        "sessions": sessions,
        "session": await db.get_session(sessions[0].id),
        "overrides": await db.overrides(sessions[0].id, DATE),
        "link": await db.find_link("l" * 64),
        "webhooks": webhooks,
        "deliveries": await db.list_webhook_deliveries(webhooks[0].id, 100, 0),
        "webhooks_due": await db.webhooks_due(FAR),
        "webhook_cursor": await db.webhook_cursor("checkins"),
        "site_exists": await db.site_exists("north"),
    }
    return typing.cast(dict[str, typing.Any], jsonable(found))
