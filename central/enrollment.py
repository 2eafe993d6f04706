"""Central's side of enrollment: check the HMAC made with the one-time code, bind the keys,
burn the code, answer signed on the device's `cmd` topic."""

from __future__ import annotations

import dataclasses
import logging

from central import keyring
from central import store
from edge_agent.protocol import enroll

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Outcome:
    reply: str | None  # signed reply to publish on the device's cmd topic, if any
    reason: str | None  # rejection reason for the counters, None when enrolled


async def handle(
    db: store.Store, keys: keyring.Keyring, site: str, device: str, payload: bytes, now_ms: int
) -> Outcome:
    try:
        request = enroll.parse_request(payload)
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
        return reject("already_enrolled")
    if record.enroll_code is None:
        return reject("no_code")
    if record.enroll_expires_ms is not None and now_ms > record.enroll_expires_ms:
        return reject("code_expired")
    if request.room != record.room:
        return reject("wrong_room")
    if not enroll.check_mac(request, record.enroll_code):
        return reject("bad_mac")
    try:
        await db.bind_device(site, device, request.ed25519, request.x25519, now_ms)
    except store.Conflict:
        return reject("no_code")
    log.info("enrolled device %s/%s in room %s", site, device, record.room)
    return Outcome(enroll.sign_reply(keys.signing, enrolled), None)
