"""Every query of the store, written once for SQLite and PostgreSQL.

Each function takes a `sqlalchemy.Connection` already inside the transaction the engine
opened for it (engines.py), so a function is one transaction: what it reads and writes is
atomic, and an exception rolls all of it back. Rows come back as the dataclasses of
`central.storage.store`, mapped by column name (rows.py). The statements of the hot paths (a proof,
a check-in) are built once at import, so SQLAlchemy's compiled cache serves them without
rebuilding the expression each time.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing

import sqlalchemy as sa

from central.domain import environment
from central.domain import timetable
from central.storage import dialects
from central.storage import prepared
from central.storage import rows
from central.storage import schema as t
from central.storage import store

RECENT_REJECTIONS = 200

_ROOM = rows.select(store.Room, t.rooms)
_DEVICE = rows.select(store.Device, t.devices)
_KEY = rows.select(store.DeviceKey, t.device_keys)
_PROOF = rows.select(store.ProofRow, t.proofs)
_CHAIN = rows.select(store.ChainEvent, t.chain_events)
_ALERT = rows.select(store.Alert, t.alerts)
_STUDENT = rows.select(store.Student, t.students)
_CHECKIN = rows.select(store.Checkin, t.checkins)
_COURSE = rows.select(store.Course, t.courses)
_SESSION = rows.select(timetable.Session, t.sessions, start="starts", end="ends")
_OVERRIDE = rows.select(store.Override, t.attendance_overrides)
_LINK = rows.select(store.VerifyLink, t.verify_links)
_AUDIT = rows.select(store.AuditEntry, t.audit_log)
_WEBHOOK = rows.select(store.Webhook, t.webhooks)
_DELIVERY = rows.select(store.WebhookDelivery, t.webhook_deliveries)
_PROFILE = rows.select(environment.Profile, t.room_profiles)


def _fields(record: typing.Any) -> dict[str, typing.Any]:
    """A dataclass's fields, shallow (dataclasses.asdict copies every nested value)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def _param(name: str) -> sa.BindParameter[typing.Any]:
    return sa.bindparam(f"b_{name}")


def _prepared_insert(table: sa.Table, names: typing.Iterable[str]) -> sa.Insert:
    """INSERT of these columns, each from the bind parameter b_<name> of the column's type."""
    return sa.insert(table).values(
        {name: sa.bindparam(f"b_{name}", type_=table.c[name].type) for name in names}
    )


def _b(values: typing.Mapping[str, typing.Any]) -> dict[str, typing.Any]:
    return {f"b_{name}": value for name, value in values.items()}


def _changed(result: sa.CursorResult[typing.Any]) -> int:
    return int(result.rowcount)


def _exists(conn: sa.Connection, statement: sa.Select[typing.Any]) -> bool:
    return conn.execute(sa.select(sa.literal(1)).where(statement.exists())).first() is not None


def _site_exists(conn: sa.Connection, site: str) -> bool:
    return _exists(conn, sa.select(t.sites.c.site).where(t.sites.c.site == site))


# -- sites, rooms, devices -----------------------------------------------------------------
def add_site(conn: sa.Connection, site: str, name: str) -> None:
    conn.execute(sa.insert(t.sites).values(site=site, name=name))


def site_exists(conn: sa.Connection, site: str) -> bool:
    return _site_exists(conn, site)


def add_room(
    conn: sa.Connection,
    site: str,
    room: str,
    name: str,
    lat: float | None,
    lon: float | None,
    radius_m: float,
) -> None:
    if not _site_exists(conn, site):
        raise store.NotFound(f"site {site} does not exist")
    conn.execute(
        sa.insert(t.rooms).values(
            site=site, room=room, name=name, lat=lat, lon=lon, radius_m=radius_m
        )
    )


_GET_ROOM = prepared.Prepared(
    _ROOM.where(t.rooms.c.site == _param("site"), t.rooms.c.room == _param("room"))
)


def get_room(conn: sa.Connection, site: str, room: str) -> store.Room | None:
    row = _GET_ROOM.first(conn, b_site=site, b_room=room)
    return rows.room(row) if row else None


def list_rooms(conn: sa.Connection, site: str | None) -> list[store.Room]:
    query = _ROOM if site is None else _ROOM.where(t.rooms.c.site == site)
    return [rows.room(row) for row in conn.execute(query.order_by(t.rooms.c.site, t.rooms.c.room))]


def update_room(
    conn: sa.Connection, site: str, room: str, lat: float | None, lon: float | None, radius_m: float
) -> None:
    changed = conn.execute(
        sa.update(t.rooms)
        .where(t.rooms.c.site == site, t.rooms.c.room == room)
        .values(lat=lat, lon=lon, radius_m=radius_m)
    )
    if _changed(changed) != 1:
        raise store.NotFound(f"room {site}/{room} does not exist")


def add_device(
    conn: sa.Connection, site: str, room: str, device: str, code: str, expires_ms: int
) -> None:
    if get_room(conn, site, room) is None:
        raise store.NotFound(f"room {site}/{room} does not exist")
    conn.execute(
        sa.insert(t.devices).values(
            site=site, room=room, device=device, enroll_code=code, enroll_expires_ms=expires_ms
        )
    )


def _one_device(devices: sa.Table, site: str, device: str) -> sa.ColumnElement[bool]:
    return sa.and_(devices.c.site == site, devices.c.device == device)


_GET_DEVICE = prepared.Prepared(
    _DEVICE.where(t.devices.c.site == _param("site"), t.devices.c.device == _param("device"))
)


def get_device(conn: sa.Connection, site: str, device: str) -> store.Device | None:
    row = _GET_DEVICE.first(conn, b_site=site, b_device=device)
    return rows.device(row) if row else None


def list_devices(conn: sa.Connection, site: str | None) -> list[store.Device]:
    query = _DEVICE if site is None else _DEVICE.where(t.devices.c.site == site)
    ordered = query.order_by(t.devices.c.site, t.devices.c.device)
    return [rows.device(row) for row in conn.execute(ordered)]


_ROOM_DEVICES = prepared.Prepared(
    _DEVICE.where(t.devices.c.site == _param("site"), t.devices.c.room == _param("room")).order_by(
        t.devices.c.device
    )
)


def room_devices(conn: sa.Connection, site: str, room: str) -> list[store.Device]:
    return [rows.device(row) for row in _ROOM_DEVICES.rows(conn, b_site=site, b_room=room)]


def silent_devices(conn: sa.Connection, now_ms: int, grace_ms: int) -> list[store.Device]:
    d = t.devices
    query = _DEVICE.where(
        d.c.last_proof_at.is_not(None),
        d.c.last_proof_at + 3 * d.c.slot_s * 1000 + grace_ms < now_ms,
    ).order_by(d.c.site, d.c.device)
    return [rows.device(row) for row in conn.execute(query)]


def _enroll_key(
    site: str, device: str, ed25519: bytes, x25519: bytes, now_ms: int, evidence: str, note: str
) -> sa.Insert:
    """The first key epoch, from the device's row (its room), as `bind_device` opens it."""
    d = t.devices
    source = sa.select(
        d.c.site,
        d.c.device,
        d.c.room,
        sa.literal(1, t.Int),
        sa.literal(ed25519, sa.LargeBinary),
        sa.literal(x25519, sa.LargeBinary),
        sa.literal("enroll", sa.Text),
        sa.literal(now_ms, t.Int),
        sa.literal(evidence, sa.Text),
        sa.literal(note, sa.Text),
    ).where(_one_device(d, site, device))
    k = t.device_keys.c
    columns = [k.site, k.device, k.room, k.from_seq, k.ed25519, k.x25519, k.kind, k.added_at]
    return sa.insert(t.device_keys).from_select([*columns, k.evidence, k.note], source)


def bind_device(
    conn: sa.Connection,
    site: str,
    device: str,
    ed25519: bytes,
    x25519: bytes,
    now_ms: int,
    evidence: str = "",
    note: str = "",
) -> None:
    """Bind the keys and burn the code together: a code works once. The keys open the
    device's key history (from seq 1), with the enrollment request as evidence."""
    d = t.devices
    bound = conn.execute(
        sa.update(d)
        .where(_one_device(d, site, device), d.c.enroll_code.is_not(None), d.c.ed25519.is_(None))
        .values(
            ed25519=ed25519,
            x25519=x25519,
            enrolled_at=now_ms,
            enroll_code=None,
            enroll_expires_ms=None,
        )
    )
    if _changed(bound) != 1:
        raise store.Conflict(f"device {site}/{device} has no enrollment code to burn")
    conn.execute(_enroll_key(site, device, ed25519, x25519, now_ms, evidence, note))


_DEVICE_KEYS = _KEY.where(
    t.device_keys.c.site == _param("site"), t.device_keys.c.device == _param("device")
)
_KEY_HISTORY = prepared.Prepared(_DEVICE_KEYS.order_by(t.device_keys.c.id))
_KEY_AT = prepared.Prepared(
    _DEVICE_KEYS.where(t.device_keys.c.from_seq <= _param("seq"))
    .order_by(t.device_keys.c.from_seq.desc(), t.device_keys.c.id.desc())
    .limit(1)
)


def device_keys(conn: sa.Connection, site: str, device: str) -> list[store.DeviceKey]:
    return [rows.key(row) for row in _KEY_HISTORY.rows(conn, b_site=site, b_device=device)]


def device_key_at(conn: sa.Connection, site: str, device: str, seq: int) -> store.DeviceKey | None:
    row = _KEY_AT.first(conn, b_site=site, b_device=device, b_seq=seq)
    return rows.key(row) if row else None


def change_device_keys(
    conn: sa.Connection, key: store.DeviceKey, previous: bytes, code: str | None
) -> None:
    d = t.devices
    query = sa.update(d).where(
        _one_device(d, key.site, key.device), d.c.ed25519 == previous, d.c.last_seq < key.from_seq
    )
    if code is not None:
        query = query.where(d.c.enroll_code == code)
    changed = conn.execute(
        query.values(
            ed25519=key.ed25519,
            x25519=key.x25519,
            room=key.room,
            enroll_code=None,
            enroll_expires_ms=None,
            enroll_room=None,
        )
    )
    if _changed(changed) != 1:
        raise store.Conflict(f"device {key.site}/{key.device}: key or chain head moved")
    fields = _fields(key)
    del fields["id"]
    conn.execute(sa.insert(t.device_keys).values(**fields))


def arm_reenroll(
    conn: sa.Connection, site: str, device: str, code: str, expires_ms: int, room: str
) -> bool:
    d = t.devices
    changed = conn.execute(
        sa.update(d)
        .where(_one_device(d, site, device), d.c.ed25519.is_not(None))
        .values(enroll_code=code, enroll_expires_ms=expires_ms, enroll_room=room)
    )
    return _changed(changed) == 1


def reenroll_room(conn: sa.Connection, site: str, device: str) -> str | None:
    d = t.devices
    room: str | None = conn.execute(
        sa.select(d.c.enroll_room).where(_one_device(d, site, device))
    ).scalar()
    return room


def revoke_device(conn: sa.Connection, site: str, device: str) -> bool:
    d = t.devices
    changed = conn.execute(
        sa.update(d)
        .where(_one_device(d, site, device))
        .values(ed25519=None, x25519=None, enroll_code=None, enroll_expires_ms=None)
    )
    return _changed(changed) == 1


def set_online(conn: sa.Connection, site: str, device: str, online: bool, now_ms: int) -> bool:
    d = t.devices
    changed = conn.execute(
        sa.update(d)
        .where(_one_device(d, site, device), d.c.online != online)
        .values(online=online, status_at=now_ms)
    )
    return _changed(changed) == 1


# -- proofs (a hot path: statements built once) --------------------------------------------
_INSERT_PROOF = prepared.Prepared(
    _prepared_insert(t.proofs, (f.name for f in dataclasses.fields(store.ProofRow)))
)
_ADVANCE_HEAD = prepared.Prepared(
    sa.update(t.devices)
    .where(
        t.devices.c.site == sa.bindparam("b_site"),
        t.devices.c.device == sa.bindparam("b_device"),
        t.devices.c.last_seq < sa.bindparam("b_seq"),
    )
    .values(
        last_seq=sa.bindparam("b_seq"),
        last_hash=sa.bindparam("b_hash"),
        last_proof_at=sa.bindparam("b_received_at"),
        last_iat=sa.bindparam("b_iat"),
        last_slot=sa.bindparam("b_slot"),
        slot_s=sa.bindparam("b_slot_s"),
        otp_step_s=sa.bindparam("b_otp_step_s"),
        clock_offset_ms=sa.bindparam("b_clock_offset_ms"),
        last_verdict=sa.bindparam("b_verdict"),
        otp_digest=sa.bindparam("b_otp_digest"),
    )
)


def store_proof(
    conn: sa.Connection,
    row: store.ProofRow,
    slot_s: int,
    otp_step_s: int,
    clock_offset_ms: int,
    otp_digest: str = "sha1",
) -> None:
    """The proof and the device's chain head move together; the head only moves forward. A
    proof already stored is a Conflict (the primary key decides, also between processes)."""
    values = _fields(row)
    values["reasons"] = list(row.reasons)
    _INSERT_PROOF.changed(conn, **_b(values))
    _ADVANCE_HEAD.changed(
        conn,
        b_site=row.site,
        b_device=row.device,
        b_seq=row.seq,
        b_hash=row.hash,
        b_received_at=row.received_at,
        b_iat=row.iat,
        b_slot=row.slot,
        b_slot_s=slot_s,
        b_otp_step_s=otp_step_s,
        b_clock_offset_ms=clock_offset_ms,
        b_verdict=row.verdict,
        b_otp_digest=otp_digest,
    )


_DEVICE_PROOFS = sa.and_(t.proofs.c.site == _param("site"), t.proofs.c.device == _param("device"))
_PROOF_HASH = prepared.Prepared(
    sa.select(t.proofs.c.hash).where(_DEVICE_PROOFS, t.proofs.c.seq == _param("seq"))
)
_GET_PROOF = prepared.Prepared(_PROOF.where(_DEVICE_PROOFS, t.proofs.c.seq == _param("seq")))
_PROOF_FOR_SLOT = prepared.Prepared(
    _PROOF.where(_DEVICE_PROOFS, t.proofs.c.slot == _param("slot"))
    .order_by(t.proofs.c.seq)
    .limit(1)
)


def proof_hash(conn: sa.Connection, site: str, device: str, seq: int) -> str | None:
    row = _PROOF_HASH.first(conn, b_site=site, b_device=device, b_seq=seq)
    return str(row["hash"]) if row else None


def get_proof(conn: sa.Connection, site: str, device: str, seq: int) -> store.ProofRow | None:
    row = _GET_PROOF.first(conn, b_site=site, b_device=device, b_seq=seq)
    return rows.proof(row) if row else None


def proof_for_slot(conn: sa.Connection, site: str, device: str, slot: int) -> store.ProofRow | None:
    row = _PROOF_FOR_SLOT.first(conn, b_site=site, b_device=device, b_slot=slot)
    return rows.proof(row) if row else None


def list_proofs(
    conn: sa.Connection, site: str | None, device: str, limit: int, before_seq: int | None
) -> list[store.ProofRow]:
    p = t.proofs
    query = _PROOF.where(p.c.device == device)
    if site is not None:
        query = query.where(p.c.site == site)
    if before_seq is not None:
        query = query.where(p.c.seq < before_seq)
    return [rows.proof(row) for row in conn.execute(query.order_by(p.c.seq.desc()).limit(limit))]


# -- chain events --------------------------------------------------------------------------
def add_chain_event(
    conn: sa.Connection,
    site: str,
    device: str,
    kind: str,
    first: int,
    last: int,
    detail: str,
    now_ms: int,
) -> store.ChainEvent:
    values: dict[str, typing.Any] = {
        "site": site,
        "device": device,
        "kind": kind,
        "first": first,
        "last": last,
        "detail": detail,
        "detected_at": now_ms,
    }
    new_id = conn.execute(
        sa.insert(t.chain_events).values(**values).returning(t.chain_events.c.id)
    ).scalar_one()
    return store.ChainEvent(id=int(new_id), resolved_at=None, **values)


def settle_gaps(conn: sa.Connection, site: str, device: str, now_ms: int) -> int:
    """Marks gaps whose every seq is now stored as resolved; returns how many stay open."""
    e, p = t.chain_events, t.proofs
    stored = (
        sa.select(sa.func.count())
        .where(
            p.c.site == e.c.site,
            p.c.device == e.c.device,
            p.c.seq.between(e.c.first, e.c.last),
        )
        .scalar_subquery()
    )
    open_gaps = sa.and_(
        e.c.site == site, e.c.device == device, e.c.kind == "gap", e.c.resolved_at.is_(None)
    )
    conn.execute(
        sa.update(e).where(open_gaps, e.c.last - e.c.first + 1 == stored).values(resolved_at=now_ms)
    )
    return int(conn.execute(sa.select(sa.func.count()).where(open_gaps)).scalar_one())


def list_chain_events(
    conn: sa.Connection, site: str | None, device: str | None, limit: int, after_id: int
) -> list[store.ChainEvent]:
    e = t.chain_events
    query = _CHAIN.where(e.c.id > after_id)
    if site is not None:
        query = query.where(e.c.site == site)
    if device is not None:
        query = query.where(e.c.device == device)
    return [rows.chain_event(row) for row in conn.execute(query.order_by(e.c.id).limit(limit))]


# -- room profiles and alerts --------------------------------------------------------------
_GET_PROFILE = prepared.Prepared(
    _PROFILE.where(
        t.room_profiles.c.site == _param("site"), t.room_profiles.c.room == _param("room")
    )
)


def get_profile(conn: sa.Connection, site: str, room: str) -> environment.Profile | None:
    row = _GET_PROFILE.first(conn, b_site=site, b_room=room)
    return rows.profile(row) if row else None


def save_profile(conn: sa.Connection, profile: environment.Profile, now_ms: int) -> None:
    values = {
        "state": profile.state,
        "wifi": sorted(profile.wifi),
        "ble": sorted(profile.ble),
        "learn_target": profile.learn_target,
        "learned": profile.learned,
        "counts": profile.counts,
        "updated_at": now_ms,
    }
    insert = dialects.insert(conn, t.room_profiles).values(
        site=profile.site, room=profile.room, **values
    )
    conn.execute(insert.on_conflict_do_update(index_elements=["site", "room"], set_=values))


def raise_alert(
    conn: sa.Connection, site: str, device: str, kind: str, reason: str, now_ms: int
) -> store.Alert:
    """Conflict when one of that kind is already open (a partial unique index decides)."""
    values: dict[str, typing.Any] = {
        "site": site,
        "device": device,
        "kind": kind,
        "reason": reason[:500],
        "raised_at": now_ms,
    }
    new_id = conn.execute(
        sa.insert(t.alerts).values(**values).returning(t.alerts.c.id)
    ).scalar_one()
    return store.Alert(id=int(new_id), cleared_at=None, **values)


def clear_alerts(
    conn: sa.Connection, site: str, device: str, kind: str, now_ms: int
) -> list[store.Alert]:
    """RETURNING reports each cleared alert to exactly one process when two clear at once."""
    a = t.alerts
    cleared = conn.execute(
        sa.update(a)
        .where(a.c.site == site, a.c.device == device, a.c.kind == kind, a.c.cleared_at.is_(None))
        .values(cleared_at=now_ms)
        .returning(*_ALERT.selected_columns)
    )
    return sorted((rows.alert(row) for row in cleared), key=lambda alert: alert.id)


def list_alerts(
    conn: sa.Connection,
    site: str | None,
    open_only: bool,
    limit: int,
    after_id: int,
    kind: str | None,
) -> list[store.Alert]:
    a = t.alerts
    query = _ALERT.where(a.c.id > after_id)
    if site is not None:
        query = query.where(a.c.site == site)
    if open_only:
        query = query.where(a.c.cleared_at.is_(None))
    if kind is not None:
        query = query.where(a.c.kind == kind)
    return [rows.alert(row) for row in conn.execute(query.order_by(a.c.id).limit(limit))]


def clear_alert(conn: sa.Connection, alert_id: int, now_ms: int) -> store.Alert | None:
    a = t.alerts
    row = conn.execute(
        sa.update(a)
        .where(a.c.id == alert_id, a.c.cleared_at.is_(None))
        .values(cleared_at=now_ms)
        .returning(*_ALERT.selected_columns)
    ).first()
    return rows.alert(row) if row else None


# -- rejections ----------------------------------------------------------------------------
def count_rejection(conn: sa.Connection, reason: str, topic: str, size: int, now_ms: int) -> None:
    """One upsert per reason, so processes counting at once add up, never overwrite."""
    c, log = t.rejection_counts, t.rejection_log
    insert = dialects.insert(conn, c).values(reason=reason, count=1)
    conn.execute(
        insert.on_conflict_do_update(index_elements=["reason"], set_={"count": c.c.count + 1})
    )
    conn.execute(sa.insert(log).values(at=now_ms, topic=topic[:256], reason=reason, size=size))
    newest = sa.select(sa.func.max(log.c.id)).scalar_subquery()
    conn.execute(sa.delete(log).where(log.c.id <= newest - RECENT_REJECTIONS))


def rejections(conn: sa.Connection) -> tuple[dict[str, int], list[dict[str, typing.Any]]]:
    c, log = t.rejection_counts, t.rejection_log
    counts = {
        str(reason): int(count)
        for reason, count in conn.execute(sa.select(c.c.reason, c.c.count).order_by(c.c.reason))
    }
    recent = [
        dict(row._mapping)
        for row in conn.execute(
            sa.select(log.c.at, log.c.topic, log.c.reason, log.c.size)
            .order_by(log.c.id.desc())
            .limit(50)
        )
    ]
    return counts, recent


# -- students, credentials, admin tokens, audit ------------------------------------------
def add_student(conn: sa.Connection, site: str, student_id: str, pin_hash: str) -> None:
    if not _site_exists(conn, site):
        raise store.NotFound(f"site {site} does not exist")
    conn.execute(sa.insert(t.students).values(site=site, student_id=student_id, pin_hash=pin_hash))


_GET_STUDENT = prepared.Prepared(
    _STUDENT.where(t.students.c.site == _param("site"), t.students.c.student_id == _param("id"))
)


def get_student(conn: sa.Connection, site: str, student_id: str) -> store.Student | None:
    row = _GET_STUDENT.first(conn, b_site=site, b_id=student_id)
    return rows.student(row) if row else None


def set_student_pin(conn: sa.Connection, site: str, student_id: str, pin_hash: str) -> bool:
    s, c = t.students, t.credentials
    changed = conn.execute(
        sa.update(s).where(s.c.site == site, s.c.student_id == student_id).values(pin_hash=pin_hash)
    )
    conn.execute(
        sa.update(c).where(c.c.site == site, c.c.student_id == student_id).values(revoked=True)
    )
    return _changed(changed) > 0


def purge_before(conn: sa.Connection, before_ms: int) -> dict[str, int]:
    c, p = t.checkins, t.proofs
    checkins = conn.execute(
        sa.update(c)
        .where(
            c.c.created_at < before_ms,
            sa.or_(c.c.browser.is_not(None), dialects.json_has_key(c.c.evidence, "network")),
        )
        .values(
            browser=None,
            evidence=dialects.json_without(c.c.evidence, "network", "browser_students"),
        )
    )
    needed = sa.select(c.c.id).where(
        c.c.site == p.c.site, c.c.device == p.c.device, c.c.slot == p.c.slot
    )
    proofs = conn.execute(
        sa.update(p)
        .where(p.c.received_at < before_ms, p.c.jws != "", ~needed.exists())
        .values(jws="")
    )
    return {"checkins": _changed(checkins), "proofs": _changed(proofs)}


def erase_student(conn: sa.Connection, site: str, student_id: str) -> dict[str, int]:
    """Children first; rows deleted per table."""
    c = t.checkins
    theirs = sa.select(c.c.id).where(c.c.site == site, c.c.student_id == student_id)
    site_sessions = sa.select(t.sessions.c.id).where(t.sessions.c.site == site)
    o, e, cr, s = t.attendance_overrides, t.enrolments, t.credentials, t.students
    statements: list[tuple[str, sa.Delete]] = [
        ("verify_links", sa.delete(t.verify_links).where(t.verify_links.c.checkin_id.in_(theirs))),
        ("checkins", sa.delete(c).where(c.c.site == site, c.c.student_id == student_id)),
        (
            "attendance_overrides",
            sa.delete(o).where(o.c.student_id == student_id, o.c.session_id.in_(site_sessions)),
        ),
        ("enrolments", sa.delete(e).where(e.c.site == site, e.c.student_id == student_id)),
        ("credentials", sa.delete(cr).where(cr.c.site == site, cr.c.student_id == student_id)),
        ("students", sa.delete(s).where(s.c.site == site, s.c.student_id == student_id)),
    ]
    return {table: _changed(conn.execute(statement)) for table, statement in statements}


def add_credential(
    conn: sa.Connection,
    credential_id: str,
    site: str,
    student_id: str,
    now_ms: int,
    expires_ms: int,
) -> None:
    conn.execute(
        sa.insert(t.credentials).values(
            id=credential_id,
            site=site,
            student_id=student_id,
            created_at=now_ms,
            expires_at=expires_ms,
            revoked=False,
        )
    )


_ACTIVE_CREDENTIAL = prepared.Prepared(
    sa.select(t.credentials.c.id).where(
        t.credentials.c.id == _param("id"),
        sa.not_(t.credentials.c.revoked),
        t.credentials.c.expires_at > _param("now"),
    )
)


def credential_active(conn: sa.Connection, credential_id: str, now_ms: int) -> bool:
    return _ACTIVE_CREDENTIAL.first(conn, b_id=credential_id, b_now=now_ms) is not None


def revoke_credential(conn: sa.Connection, credential_id: str) -> None:
    c = t.credentials
    conn.execute(sa.update(c).where(c.c.id == credential_id).values(revoked=True))


def add_admin_token(
    conn: sa.Connection,
    token_hash: str,
    role: str,
    name: str,
    now_ms: int,
    courses: tuple[tuple[str, str], ...],
    site: str | None,
) -> None:
    conn.execute(
        sa.insert(t.admin_tokens).values(
            hash=token_hash, role=role, name=name, created_at=now_ms, site=site
        )
    )
    scopes = [{"hash": token_hash, "site": s, "course": c} for s, c in sorted(set(courses))]
    if scopes:
        conn.execute(sa.insert(t.token_courses), scopes)


def token_courses(conn: sa.Connection, token_hash: str) -> frozenset[tuple[str, str]]:
    tc = t.token_courses
    found = conn.execute(sa.select(tc.c.site, tc.c.course).where(tc.c.hash == token_hash))
    return frozenset((row.site, row.course) for row in found)


def list_admin_tokens(conn: sa.Connection, site: str | None) -> list[store.AdminToken]:
    a, tc = t.admin_tokens, t.token_courses
    query = sa.select(a.c.hash, a.c.role, a.c.name, a.c.created_at, a.c.site)
    if site is not None:
        query = query.where(a.c.site == site)
    tokens = conn.execute(query.order_by(a.c.created_at, a.c.hash)).all()
    scopes = conn.execute(sa.select(tc.c.hash, tc.c.site, tc.c.course)).all()
    return store.tokens_with_courses(tokens, scopes)


def set_token_site(conn: sa.Connection, token_id: str, role: str, site: str | None) -> bool:
    a = t.admin_tokens
    changed = conn.execute(
        sa.update(a)
        .where(sa.func.substr(a.c.hash, 1, store.TOKEN_ID_CHARS) == token_id)
        .values(role=role, site=site)
    )
    return _changed(changed) > 0


def revoke_admin_token(conn: sa.Connection, token_id: str, site: str | None) -> bool:
    if len(token_id) != store.TOKEN_ID_CHARS or not all(c in "0123456789abcdef" for c in token_id):
        return False
    a, tc = t.admin_tokens, t.token_courses
    hashes = sa.select(a.c.hash).where(
        sa.func.substr(a.c.hash, 1, store.TOKEN_ID_CHARS) == token_id
    )
    if site is not None:
        hashes = hashes.where(a.c.site == site)
    conn.execute(sa.delete(tc).where(tc.c.hash.in_(hashes)))
    return _changed(conn.execute(sa.delete(a).where(a.c.hash.in_(hashes)))) > 0


def admin_role(conn: sa.Connection, token_hash: str) -> str | None:
    a = t.admin_tokens
    role: str | None = conn.execute(sa.select(a.c.role).where(a.c.hash == token_hash)).scalar()
    return role


def admin_grant(conn: sa.Connection, token_hash: str) -> store.TokenGrant | None:
    a = t.admin_tokens
    row = conn.execute(sa.select(a.c.role, a.c.site).where(a.c.hash == token_hash)).first()
    return store.TokenGrant(row.role, row.site) if row else None


def audit(
    conn: sa.Connection,
    actor: str,
    action: str,
    target: str,
    detail: str,
    now_ms: int,
    site: str | None,
) -> None:
    conn.execute(
        sa.insert(t.audit_log).values(
            at=now_ms,
            actor=actor[:80],
            action=action[:80],
            target=target[:200],
            detail=detail[:1000],
            site=site,
        )
    )


def list_audit(
    conn: sa.Connection, limit: int, after_id: int, site: str | None
) -> list[store.AuditEntry]:
    a = t.audit_log
    query = _AUDIT.where(a.c.id > after_id)
    if site is not None:
        query = query.where(a.c.site == site)
    return [rows.audit_entry(row) for row in conn.execute(query.order_by(a.c.id).limit(limit))]


# -- check-ins (a hot path: statements built once) -----------------------------------------
_INSERT_CHECKIN = prepared.Prepared(
    _prepared_insert(t.checkins, (f.name for f in dataclasses.fields(store.NewCheckin))).returning(
        t.checkins.c.id
    )
)
# One statement for both cases, in this shape: SQLite then reads the few rows of the browser
# (checkins_browser) instead of every check-in of the occurrence (checkins_once_per_session,
# 500 in a lecture hall), which made a burst quadratic.
_SESSION_ID = sa.bindparam("b_session", type_=t.Int)
_BROWSER_STUDENTS = prepared.Prepared(
    sa.select(sa.func.count(sa.distinct(t.checkins.c.student_id)).label("others")).where(
        t.checkins.c.browser == _param("browser"),
        t.checkins.c.student_id != _param("student"),
        sa.or_(
            sa.and_(
                _SESSION_ID.is_not(None),
                t.checkins.c.session_id == _SESSION_ID,
                t.checkins.c.session_date == _param("date"),
            ),
            sa.and_(
                _SESSION_ID.is_(None),
                t.checkins.c.room == _param("room"),
                t.checkins.c.created_at >= _param("since"),
            ),
        ),
    )
)


def add_checkin(conn: sa.Connection, new: store.NewCheckin) -> store.Checkin:
    values = _fields(new)
    values["flags"] = list(new.flags)
    inserted = _INSERT_CHECKIN.first(conn, **_b(values))
    assert inserted is not None  # RETURNING gives the new row's id
    return store.stored_checkin(new, int(inserted["id"]))


def browser_students(
    conn: sa.Connection,
    browser: str,
    student_id: str,
    session_id: int | None,
    session_date: str | None,
    room: str,
    since_ms: int,
) -> int:
    """Other students this browser checked in for the same occurrence (or, without a
    session, in the same room since `since_ms`)."""
    found = _BROWSER_STUDENTS.first(
        conn,
        b_browser=browser,
        b_student=student_id,
        b_session=session_id,
        b_date=session_date,
        b_room=room,
        b_since=since_ms,
    )
    return int(found["others"]) if found else 0


def record_checkin(
    conn: sa.Connection, context: store.CheckinContext, decide: store.DecideCheckin
) -> store.Checkin:
    dialects.lock_browser(conn, context.browser)
    if context.credential_id is not None and not credential_active(
        conn, context.credential_id, context.now_ms
    ):
        raise store.CredentialInactive(context.credential_id)
    others = browser_students(
        conn,
        context.browser,
        context.student_id,
        context.session_id,
        context.session_date,
        context.room,
        context.since_ms,
    )
    return add_checkin(conn, decide(others))


def get_checkin(conn: sa.Connection, checkin_id: int) -> store.Checkin | None:
    row = conn.execute(_CHECKIN.where(t.checkins.c.id == checkin_id)).first()
    return rows.checkin(row) if row else None


def list_checkins(
    conn: sa.Connection,
    site: str | None,
    room: str | None,
    since_ms: int | None,
    limit: int,
    after_id: int,
    student_id: str | None,
    courses: frozenset[tuple[str, str]] | None,
) -> list[store.Checkin]:
    c, s = t.checkins, t.sessions
    query = _CHECKIN.where(c.c.id > after_id)
    if site is not None:
        query = query.where(c.c.site == site)
    if room is not None:
        query = query.where(c.c.room == room)
    if since_ms is not None:
        query = query.where(c.c.created_at >= since_ms)
    if student_id is not None:
        query = query.where(c.c.student_id == student_id)
    if courses is not None:
        theirs = sa.select(s.c.id).where(sa.tuple_(s.c.site, s.c.course).in_(sorted(courses)))
        query = query.where(c.c.session_id.in_(theirs))
    return [rows.checkin(row) for row in conn.execute(query.order_by(c.c.id).limit(limit))]


def occurrence_checkins(
    conn: sa.Connection, session_id: int, session_date: str
) -> list[store.Checkin]:
    c = t.checkins
    query = _CHECKIN.where(c.c.session_id == session_id, c.c.session_date == session_date)
    return [rows.checkin(row) for row in conn.execute(query.order_by(c.c.id))]


def set_checkout(conn: sa.Connection, checkin_id: int, now_ms: int) -> bool:
    c = t.checkins
    changed = conn.execute(
        sa.update(c)
        .where(c.c.id == checkin_id, c.c.checked_out_at.is_(None))
        .values(checked_out_at=now_ms)
    )
    return _changed(changed) == 1


def set_record_jws(conn: sa.Connection, checkin_id: int, record_jws: str) -> str:
    """Keeps the first countersignature: a record is signed once."""
    c = t.checkins
    conn.execute(
        sa.update(c)
        .where(c.c.id == checkin_id, c.c.record_jws.is_(None))
        .values(record_jws=record_jws)
    )
    stored = conn.execute(sa.select(c.c.record_jws).where(c.c.id == checkin_id)).first()
    if stored is None:
        raise store.NotFound(f"no check-in {checkin_id}")
    return str(stored.record_jws)


# -- courses, rosters, sessions, overrides -------------------------------------------------
def add_course(conn: sa.Connection, course: store.Course) -> None:
    if not _site_exists(conn, course.site):
        raise store.NotFound(f"site {course.site} does not exist")
    conn.execute(sa.insert(t.courses).values(**dataclasses.asdict(course)))


def get_course(conn: sa.Connection, site: str, course: str) -> store.Course | None:
    c = t.courses
    row = conn.execute(_COURSE.where(c.c.site == site, c.c.course == course)).first()
    return rows.course(row) if row else None


def list_courses(conn: sa.Connection, site: str | None) -> list[store.Course]:
    c = t.courses
    query = _COURSE if site is None else _COURSE.where(c.c.site == site)
    return [rows.course(row) for row in conn.execute(query.order_by(c.c.site, c.c.course))]


def update_course(conn: sa.Connection, course: store.Course) -> bool:
    c = t.courses
    changed = conn.execute(
        sa.update(c)
        .where(c.c.site == course.site, c.c.course == course.course)
        .values(name=course.name, timezone=course.timezone)
    )
    return _changed(changed) > 0


def set_roster(conn: sa.Connection, site: str, course: str, students: list[str]) -> None:
    """Replaces the course's roster."""
    e = t.enrolments
    conn.execute(sa.delete(e).where(e.c.site == site, e.c.course == course))
    members = [{"site": site, "course": course, "student_id": s} for s in sorted(set(students))]
    if members:
        conn.execute(sa.insert(e), members)


_ROSTER = prepared.Prepared(
    sa.select(t.enrolments.c.student_id)
    .where(t.enrolments.c.site == _param("site"), t.enrolments.c.course == _param("course"))
    .order_by(t.enrolments.c.student_id)
)


def roster(conn: sa.Connection, site: str, course: str) -> list[str]:
    return [str(row["student_id"]) for row in _ROSTER.rows(conn, b_site=site, b_course=course)]


def courses_of(conn: sa.Connection, site: str, student_id: str) -> list[str]:
    e = t.enrolments
    query = sa.select(e.c.course).where(e.c.site == site, e.c.student_id == student_id)
    return list(conn.execute(query.order_by(e.c.course)).scalars())


def _minutes(value: datetime.time) -> datetime.time:
    return value.replace(second=0, microsecond=0, tzinfo=None)


def _session_values(session: timetable.Session) -> dict[str, typing.Any]:
    return {
        "room": session.room,
        "timezone": session.timezone,
        "first_date": session.first_date,
        "starts": _minutes(session.start),
        "ends": _minutes(session.end),
        "weekly": session.weekly,
        "until": session.until,
        "grace_min": session.grace_min,
        "checkout": session.checkout,
    }


def add_session(conn: sa.Connection, session: timetable.Session) -> timetable.Session:
    """Conflict when the course or room does not exist (the foreign keys decide)."""
    values = {"site": session.site, "course": session.course, **_session_values(session)}
    new_id = conn.execute(
        sa.insert(t.sessions).values(**values).returning(t.sessions.c.id)
    ).scalar_one()
    return dataclasses.replace(session, id=int(new_id))


def update_session(conn: sa.Connection, session: timetable.Session) -> bool:
    s = t.sessions
    changed = conn.execute(
        sa.update(s).where(s.c.id == session.id).values(**_session_values(session))
    )
    return _changed(changed) > 0


def get_session(conn: sa.Connection, session_id: int) -> timetable.Session | None:
    row = conn.execute(_SESSION.where(t.sessions.c.id == session_id)).first()
    return rows.session(row) if row else None


def list_sessions(
    conn: sa.Connection,
    site: str | None,
    course: str | None,
    room: str | None,
    limit: int,
    after_id: int,
) -> list[timetable.Session]:
    s = t.sessions
    query = _SESSION.where(s.c.id > after_id)
    if site is not None:
        query = query.where(s.c.site == site)
    if course is not None:
        query = query.where(s.c.course == course)
    if room is not None:
        query = query.where(s.c.room == room)
    return [rows.session(row) for row in conn.execute(query.order_by(s.c.id).limit(limit))]


def set_override(conn: sa.Connection, override: store.Override) -> None:
    values = dataclasses.asdict(override)
    changes = {k: values[k] for k in ("status", "note", "set_by", "set_at")}
    insert = dialects.insert(conn, t.attendance_overrides).values(**values)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["session_id", "session_date", "student_id"], set_=changes
        )
    )


def overrides(conn: sa.Connection, session_id: int, session_date: str) -> list[store.Override]:
    o = t.attendance_overrides
    query = _OVERRIDE.where(o.c.session_id == session_id, o.c.session_date == session_date)
    return [rows.override(row) for row in conn.execute(query.order_by(o.c.student_id))]


# -- verification links --------------------------------------------------------------------
def add_link(
    conn: sa.Connection, token_hash: str, checkin_id: int, now_ms: int, expires_ms: int
) -> store.VerifyLink:
    if not _exists(conn, sa.select(t.checkins.c.id).where(t.checkins.c.id == checkin_id)):
        raise store.NotFound(f"no check-in {checkin_id}")
    new_id = conn.execute(
        sa.insert(t.verify_links)
        .values(
            token_hash=token_hash, checkin_id=checkin_id, created_at=now_ms, expires_at=expires_ms
        )
        .returning(t.verify_links.c.id)
    ).scalar_one()
    return store.VerifyLink(int(new_id), checkin_id, now_ms, expires_ms, None)


def find_link(conn: sa.Connection, token_hash: str) -> store.VerifyLink | None:
    row = conn.execute(_LINK.where(t.verify_links.c.token_hash == token_hash)).first()
    return rows.link(row) if row else None


def get_link(conn: sa.Connection, link_id: int) -> store.VerifyLink | None:
    row = conn.execute(_LINK.where(t.verify_links.c.id == link_id)).first()
    return rows.link(row) if row else None


def revoke_link(conn: sa.Connection, link_id: int, now_ms: int) -> bool:
    v = t.verify_links
    changed = conn.execute(
        sa.update(v).where(v.c.id == link_id, v.c.revoked_at.is_(None)).values(revoked_at=now_ms)
    )
    return _changed(changed) == 1


# -- webhooks ------------------------------------------------------------------------------
def add_webhook(
    conn: sa.Connection,
    url: str,
    events: tuple[str, ...],
    description: str,
    secret: str,
    now_ms: int,
    site: str | None,
) -> store.Webhook:
    new_id = conn.execute(
        sa.insert(t.webhooks)
        .values(
            url=url,
            events=list(events),
            description=description,
            secret=secret,
            created_at=now_ms,
            site=site,
        )
        .returning(t.webhooks.c.id)
    ).scalar_one()
    return store.Webhook(int(new_id), url, events, description, secret, now_ms, site)


def list_webhooks(conn: sa.Connection, site: str | None) -> list[store.Webhook]:
    w = t.webhooks
    query = _WEBHOOK if site is None else _WEBHOOK.where(w.c.site == site)
    return [rows.webhook(row) for row in conn.execute(query.order_by(w.c.id))]


def delete_webhook(conn: sa.Connection, webhook_id: int) -> bool:
    """The webhook and its delivery log."""
    d = t.webhook_deliveries
    conn.execute(sa.delete(d).where(d.c.webhook_id == webhook_id))
    return _changed(conn.execute(sa.delete(t.webhooks).where(t.webhooks.c.id == webhook_id))) == 1


def enqueue_webhook_event(
    conn: sa.Connection, event_id: str, event_type: str, body: str, now_ms: int, site: str | None
) -> int:
    """The webhooks are few: their subscriptions are matched here, not in SQL (JSON text on
    SQLite, text[] on PostgreSQL); the unique (webhook, event) skips a repeat."""
    w = t.webhooks
    candidates = sa.select(w.c.id, w.c.events)
    if site is not None:
        candidates = candidates.where(sa.or_(w.c.site.is_(None), w.c.site == site))
    else:
        candidates = candidates.where(w.c.site.is_(None))
    subscribed = [row.id for row in conn.execute(candidates) if event_type in row.events]
    added = 0
    for webhook_id in subscribed:
        insert = dialects.insert(conn, t.webhook_deliveries).values(
            webhook_id=webhook_id,
            event_id=event_id,
            event_type=event_type,
            body=body,
            created_at=now_ms,
            attempts=0,
            next_attempt_at=now_ms,
        )
        added += _changed(
            conn.execute(insert.on_conflict_do_nothing(index_elements=["webhook_id", "event_id"]))
        )
    return added


def webhooks_due(conn: sa.Connection, now_ms: int) -> list[int]:
    d = t.webhook_deliveries
    query = sa.select(d.c.webhook_id).distinct().where(d.c.next_attempt_at <= now_ms)
    return [int(found) for found in conn.execute(query.order_by(d.c.webhook_id)).scalars()]


def due_webhook_deliveries(
    conn: sa.Connection, webhook_id: int, now_ms: int, limit: int
) -> list[store.WebhookDelivery]:
    d = t.webhook_deliveries
    query = (
        _DELIVERY.where(d.c.next_attempt_at <= now_ms, d.c.webhook_id == webhook_id)
        .order_by(d.c.next_attempt_at, d.c.id)
        .limit(limit)
    )
    return [rows.delivery(row) for row in conn.execute(query)]


def claim_webhook_delivery(
    conn: sa.Connection, delivery_id: int, due_ms: int, until_ms: int
) -> bool:
    d = t.webhook_deliveries
    changed = conn.execute(
        sa.update(d)
        .where(d.c.id == delivery_id, d.c.next_attempt_at == due_ms)
        .values(next_attempt_at=until_ms)
    )
    return _changed(changed) == 1


def record_webhook_attempt(
    conn: sa.Connection,
    delivery_id: int,
    status: int | None,
    error: str | None,
    next_attempt_ms: int | None,
    delivered_ms: int | None,
) -> None:
    d = t.webhook_deliveries
    conn.execute(
        sa.update(d)
        .where(d.c.id == delivery_id)
        .values(
            attempts=d.c.attempts + 1,
            last_status=status,
            last_error=error[:500] if error else None,
            next_attempt_at=next_attempt_ms,
            delivered_at=delivered_ms,
        )
    )


def list_webhook_deliveries(
    conn: sa.Connection, webhook_id: int, limit: int, after_id: int
) -> list[store.WebhookDelivery]:
    d = t.webhook_deliveries
    query = _DELIVERY.where(d.c.webhook_id == webhook_id, d.c.id > after_id)
    return [rows.delivery(row) for row in conn.execute(query.order_by(d.c.id).limit(limit))]


def purge_webhook_deliveries(conn: sa.Connection, before_ms: int) -> int:
    d = t.webhook_deliveries
    deleted = conn.execute(
        sa.delete(d).where(d.c.next_attempt_at.is_(None), d.c.created_at < before_ms)
    )
    return _changed(deleted)


def webhook_cursor(conn: sa.Connection, name: str) -> int | None:
    c = t.webhook_cursors
    value = conn.execute(sa.select(c.c.value).where(c.c.name == name)).scalar()
    return None if value is None else int(value)


def set_webhook_cursor(conn: sa.Connection, name: str, value: int) -> None:
    insert = dialects.insert(conn, t.webhook_cursors).values(name=name, value=value)
    conn.execute(insert.on_conflict_do_update(index_elements=["name"], set_={"value": value}))
