"""Evidence of an accepted check-in: central's countersignature over the record, the device's
token and the proof of that slot, bundled for offline verification; and verification links
(random, stored as a hash, expiring, revocable) that show the result to anyone holding one."""

from __future__ import annotations

import hashlib
import secrets
import typing

from central.checkin import evidence
from central.checkin import keychain
from central.core import keyring
from central.storage import database
from central.storage import store
from edge_agent.protocol import b64
from edge_agent.protocol import proof


class Pending(Exception):
    """The proof of the check-in's slot has not reached central yet."""


def record_claims(
    checkin: store.Checkin,
    proof_row: store.ProofRow,
    now_ms: int,
    key_chain: dict[str, typing.Any],
) -> dict[str, typing.Any]:
    """What central countersigns. `device_kid` names the key that signed the proof (RFC 7638
    thumbprint) and `key_chain_sha256` pins the bundle's key chain (keychain.member), so that
    no byte of a bundle, its chain's notes included, can change unnoticed."""
    return {
        "record": checkin.id,
        "site": checkin.site,
        "room": checkin.room,
        "device": checkin.device,
        "student_id": checkin.student_id,
        "slot": checkin.slot,
        "status": checkin.status,
        "flags": list(checkin.flags),
        "method": checkin.method,
        "token_age_ms": checkin.token_age_ms,
        "session_id": checkin.session_id,
        "session_date": checkin.session_date,
        "device_verdict": proof_row.verdict,
        "proof_seq": proof_row.seq,
        "checked_in_at": checkin.created_at,
        "issued_at": now_ms,
        "device_kid": key_chain["kid"],
        "key_chain_sha256": evidence.chain_hash(key_chain),
    }


async def bundle(
    db: database.Database, keys: keyring.Keyring, checkin: store.Checkin, now_ms: int
) -> tuple[bytes, bytes]:
    """(bundle bytes, the device's public key). The record is countersigned once, on first
    request, and the same signature is served from then on."""
    proof_row = await db.proof_for_slot(checkin.site, checkin.device, checkin.slot)
    if proof_row is None:
        raise Pending(f"no proof of slot {checkin.slot} from {checkin.device} yet")
    # The key that signed that proof (and the token in it), not the device's current one:
    # after a rotation, older records still verify.
    epoch = await db.device_key_at(checkin.site, checkin.device, proof_row.seq)
    if epoch is None:
        raise Pending(f"no key of {checkin.device} covers seq {proof_row.seq}")
    _, claims = proof.decode(proof_row.jws, len(proof_row.jws))
    token = b64.decode(claims.qr)
    # The key history up to the signing epoch (entries never change once a later one
    # exists): the bundle verifies with central's key alone.
    chain = keychain.member(await db.device_keys(checkin.site, checkin.device), epoch)
    record_jws = checkin.record_jws
    if record_jws is None:
        signed = evidence.sign_record(
            record_claims(checkin, proof_row, now_ms, chain), token, proof_row.jws, keys.signing
        )
        record_jws = await db.set_record_jws(checkin.id, signed)
    return evidence.make_bundle(record_jws, token, proof_row.jws, chain), epoch.ed25519


def new_link_token() -> str:
    return secrets.token_urlsafe(24)


def link_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
