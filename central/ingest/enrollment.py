"""Central's side of enrollment and key changes on `.../enroll`: check the HMAC made with the
one-time code, bind the keys, burn the code, answer signed on the device's `cmd` topic; check a
key change against the device's current key and record the new key with its first seq.

Key history: every key a device ever had stays in `device_keys` with the seq it starts at, so
a proof verifies with the key of its seq (an outbox drained after a change still counts), and
a key no longer current signs nothing at or after the seq where its successor starts.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import typing

from central.core import keyring
from central.storage import database
from central.storage import store
from edge_agent.protocol import b64
from edge_agent.protocol import command
from edge_agent.protocol import enroll
from edge_agent.protocol import keychange

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Outcome:
    reply: str | None  # signed reply to publish on the device's cmd topic, if any
    reason: str | None  # rejection reason for the counters, None when enrolled


async def handle(
    db: database.Database,
    keys: keyring.Keyring,
    site: str,
    device: str,
    payload: bytes,
    now_ms: int,
) -> Outcome:
    if keychange.is_key_change(payload):
        return Outcome(None, await key_change(db, site, device, payload, now_ms))
    try:
        request = enroll.parse_request(payload)
    except enroll.BadSignature as exc:
        log.warning("enroll %s/%s: %s", site, device, exc)
        return Outcome(None, "enroll_bad_signature")
    except enroll.EnrollError as exc:
        log.warning("enroll %s/%s: %s", site, device, exc)
        return Outcome(None, "enroll_malformed")
    if (request.site, request.device) != (site, device):
        return Outcome(None, "enroll_topic_mismatch")
    record = await db.get_device(site, device)

    def reject(reason: str) -> Outcome:
        log.warning("enroll %s/%s rejected: %s", site, device, reason)
        reply = enroll.sign_reply(
            keys.signing,
            {
                "v": 1,
                "type": "enroll_rejected",
                "site": site,
                "device": device,
                "nonce": request.nonce,
                "reason": reason,
                "iat": now_ms,
            },
        )
        return Outcome(reply, f"enroll_{reason}")

    if record is None:
        return Outcome(None, "enroll_unknown_device")
    enrolled = {
        "v": 1,
        "type": "enrolled",
        "site": site,
        "device": device,
        "room": record.room,
        "nonce": request.nonce,
        "iat": now_ms,
        "config": {},
    }
    if record.ed25519 is not None:
        # Already bound: the same keys asking again (a lost reply) get the same answer.
        if (record.ed25519, record.x25519) == (request.ed25519, request.x25519):
            return Outcome(enroll.sign_reply(keys.signing, enrolled), None)
        if record.enroll_code is None or request.from_seq is None:
            return reject("already_enrolled")
        return await _re_enroll(db, keys, record, request, payload, now_ms, reject)
    if record.enroll_code is None:
        return reject("no_code")
    if record.enroll_expires_ms is not None and now_ms > record.enroll_expires_ms:
        return reject("code_expired")
    if request.room != record.room:
        return reject("wrong_room")
    if not enroll.check_mac(request, record.enroll_code):
        return reject("bad_mac")
    try:
        await db.bind_device(
            site, device, request.ed25519, request.x25519, now_ms, *_evidence(request, payload)
        )
    except store.Conflict:
        return reject("no_code")
    log.info("enrolled device %s/%s in room %s", site, device, record.room)
    return Outcome(enroll.sign_reply(keys.signing, enrolled), None)


def _evidence(request: enroll.Request, payload: bytes) -> tuple[str, str]:
    """The key history's (evidence, note) for an accepted request: the exact bytes received
    (a JWS signed by the new key, or an older agent's bare JSON, noted as unsigned)."""
    note = "" if request.signed else store.NOTE_UNSIGNED_REQUEST
    return payload.decode("utf-8", errors="replace"), note


async def _re_enroll(
    db: database.Database,
    keys: keyring.Keyring,
    record: store.Device,
    request: enroll.Request,
    payload: bytes,
    now_ms: int,
    reject: typing.Callable[[str], Outcome],
) -> Outcome:
    """A device re-binding with new keys and the code central sealed to it in `re_enroll`."""
    assert record.ed25519 is not None and record.enroll_code is not None
    assert request.from_seq is not None
    if record.enroll_expires_ms is not None and now_ms > record.enroll_expires_ms:
        return reject("code_expired")
    room = await db.reenroll_room(record.site, record.device) or record.room
    if request.room != room:
        return reject("wrong_room")
    if not enroll.check_mac(request, record.enroll_code):
        return reject("bad_mac")
    if request.from_seq <= record.last_seq:
        return reject("stale_seq")
    key = store.DeviceKey(
        id=0,
        site=record.site,
        device=record.device,
        room=room,
        from_seq=request.from_seq,
        ed25519=request.ed25519,
        x25519=request.x25519,
        kind="re_enroll",
        added_at=now_ms,
        evidence=_evidence(request, payload)[0],
        note=_evidence(request, payload)[1],
    )
    try:
        await db.change_device_keys(key, record.ed25519, record.enroll_code)
    except store.Conflict:
        return reject("no_code")
    log.info(
        "re-enrolled device %s/%s in room %s: new keys from seq %d",
        record.site,
        record.device,
        room,
        request.from_seq,
    )
    reply = {
        "v": 1,
        "type": "enrolled",
        "site": record.site,
        "device": record.device,
        "room": room,
        "nonce": request.nonce,
        "iat": now_ms,
        "config": {},
    }
    return Outcome(enroll.sign_reply(keys.signing, reply), None)


async def key_change(
    db: database.Database, site: str, device: str, payload: bytes, now_ms: int
) -> str | None:
    """Record a device's announced new key; None when recorded, else the rejection reason:
    key_change_malformed, key_change_topic_mismatch, unknown_device, key_change_replay (a key
    change already applied, or signed by a key that is no longer current),
    key_change_bad_signature, key_change_wrong_room, key_change_stale_seq."""
    try:
        parsed, change = keychange.decode(payload)
    except keychange.KeyChangeError as exc:
        log.warning("key change %s/%s: %s", site, device, exc)
        return "key_change_malformed"
    if (change.site, change.device) != (site, device):
        return "key_change_topic_mismatch"
    record = await db.get_device(site, device)
    if record is None or record.ed25519 is None:
        return "unknown_device"
    known = {k.ed25519 for k in await db.device_keys(site, device)}
    if not keychange.verify(parsed, change, record.ed25519):
        retired = change.prev in known - {record.ed25519}
        if retired and keychange.verify(parsed, change, change.prev):
            return "key_change_replay"  # genuine, but its key was already replaced
        return "key_change_bad_signature"
    if change.ed25519 in known:
        return "key_change_replay"  # a key the device had before does not come back
    if change.room != record.room:
        return "key_change_wrong_room"
    if change.from_seq <= max(record.last_seq, await current_from_seq(db, record)):
        return "key_change_stale_seq"
    key = store.DeviceKey(
        id=0,
        site=site,
        device=device,
        room=record.room,
        from_seq=change.from_seq,
        ed25519=change.ed25519,
        x25519=change.x25519,
        kind="rotate",
        added_at=now_ms,
        evidence=payload.decode("ascii"),
    )
    try:
        await db.change_device_keys(key, record.ed25519, None)
    except store.Conflict:
        return "key_change_replay"
    log.info("device %s/%s rotated its keys: new key from seq %d", site, device, change.from_seq)
    return None


async def current_from_seq(db: database.Database, record: store.Device) -> int:
    """The first seq of the device's current key (1 for a key without history)."""
    history = await db.device_keys(record.site, record.device)
    found = [k.from_seq for k in history if k.ed25519 == record.ed25519]
    return found[-1] if found else 1


async def prepare_reenroll(
    db: database.Database, site: str, device: str, room: str | None, expires_ms: int
) -> dict[str, typing.Any]:
    """Arm a re-enrollment: a fresh one-time code (valid until `expires_ms`), returned sealed
    to the device's X25519 key as the `re_enroll` command's args. CommandError when the
    device is not enrolled or the room does not exist."""
    record = await db.get_device(site, device)
    if record is None or record.x25519 is None:
        raise command.CommandError("bad_args", f"no enrolled device {site}/{device}")
    target = room or record.room
    if await db.get_room(site, target) is None:
        raise command.CommandError("bad_args", f"room {site}/{target} does not exist")
    code = b64.encode(secrets.token_bytes(command.CODE_BYTES))
    if not await db.arm_reenroll(site, device, code, expires_ms, target):
        raise command.CommandError("bad_args", f"no enrolled device {site}/{device}")
    return {"code": command.seal_code(record.x25519, code), "room": target}
