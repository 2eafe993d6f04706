"""Verification of one presence proof against what central knows of its device.

Returns the proof to store or a rejection reason; never raises on bad input. Reasons:
oversize, malformed, bad_header, schema, topic_mismatch, unknown_device, bad_signature,
wrong_room, duplicate (idempotent redelivery, not an error), fork (a second, different proof
signed for a seq already stored: a cloned key or a restored state dir), chain_broken, clock,
bad_token, retired_key (signed with a key of the device that a key change retired, for a seq
at or after the change).

Each seq has one key: the device's current key from the seq its epoch starts at, an older key
(from the key history) below it, so proofs queued before a key change still verify.

A proof with a seq below the device's head whose seq is missing from the store is a late
proof (an outbox draining after an outage, or a redelivery overtaken by a newer proof): it is
accepted when it links to its stored neighbours, and fills its slot.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time

from central.core import sigpool
from central.ingest import enrollment
from central.storage import database
from central.storage import store
from edge_agent.protocol import b64
from edge_agent.protocol import chain
from edge_agent.protocol import jws
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken
from edge_agent.protocol import report
from edge_agent.protocol import slots
from edge_agent.protocol import topics

OFFSET_SAMPLES = 16
MAX_CACHED = 100_000


class Rejected(Exception):
    """`transient`: the same proof may be accepted later (from the future: its time comes)."""

    def __init__(self, reason: str, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.transient = transient


@dataclasses.dataclass(frozen=True)
class Accepted:
    row: store.ProofRow
    claims: proof.Claims
    clock_offset_ms: int
    late: bool = False  # fills a gap below the device's head
    gap: tuple[int, int] | None = None  # seqs missing before this proof, first and last


class ClockOffsets:
    """Per device, (iat - received) of recent proofs; the largest is the least delayed.

    A proof that waited in a queue (at the broker while central restarted, in the device's
    outbox) has a smaller sample than its delay-free twin; the largest of the window ignores
    it as long as one undelayed sample is in the window. A restarted central starts with an
    empty window, so the window is seeded with the estimate the store holds (`seed`): a
    restart's backlog then cannot pull the estimate down (issue 14, D6). Only samples within
    one slot below the estimate reach the window (`verify`), and a device makes one proof per
    slot, so a backlog adds at most a couple of samples: the seed stays in the window."""

    def __init__(self) -> None:
        self._samples: dict[tuple[str, str], collections.deque[int]] = {}

    def add(self, site: str, device: str, sample_ms: int, seed: int | None = None) -> int:
        samples = self._samples.get((site, device))
        if samples is None:
            if len(self._samples) > MAX_CACHED:
                self._samples.clear()
            samples = self._samples[(site, device)] = collections.deque(maxlen=OFFSET_SAMPLES)
            if seed is not None:
                samples.append(seed)
        samples.append(sample_ms)
        return max(samples)

    def reset(self, site: str, device: str) -> None:
        """Forget the device's samples (its clock was stepped: the old ones are wrong)."""
        self._samples.pop((site, device), None)


class KeyStarts:
    """Per device, the first seq of its current key, cached by that key: a key change (made
    by any central process) changes the device's key, which misses the cache."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[bytes, int]] = {}

    async def get(self, db: database.Database, device: store.Device) -> int:
        cached = self._cache.get((device.site, device.device))
        if cached is not None and cached[0] == device.ed25519:
            return cached[1]
        start = await enrollment.current_from_seq(db, device)
        if len(self._cache) > MAX_CACHED:
            self._cache.clear()
        if device.ed25519 is not None:
            self._cache[(device.site, device.device)] = (device.ed25519, start)
        return start


class KeyChangeGrace:
    """With several central processes, a device's key change and its first proofs under the
    new key can reach different processes at the same moment: a proof that fails with the key
    in the store waits once (`delay_s`) for a change in flight, and is verified again. At most
    once per device per `every_s`, so a device sending bad signatures cannot hold the
    pipeline. One process handles each device's messages in order and needs none of this."""

    def __init__(self, delay_s: float = 0.5, every_s: float = 10.0) -> None:
        self.delay_s = delay_s
        self.every_s = every_s
        self._last: dict[tuple[str, str], float] = {}

    async def wait(self, site: str, device: str) -> bool:
        """False when this device waited recently (refuse now); else True after the wait."""
        now = time.monotonic()
        if now - self._last.get((site, device), -self.every_s) < self.every_s:
            return False
        if len(self._last) > MAX_CACHED:
            self._last.clear()
        self._last[(site, device)] = now
        await asyncio.sleep(self.delay_s)
        return True


async def verify(
    db: database.Database,
    offsets: ClockOffsets,
    topic: str,
    payload: bytes,
    received_ms: int,
    max_bytes: int,
    clock_tolerance_ms: int,
    starts: KeyStarts | None = None,
    pool: sigpool.SignaturePool | None = None,
    grace: KeyChangeGrace | None = None,
) -> Accepted:
    """Both signatures (the proof's and its QR token's) are checked in one request to
    `pool` (off the event loop), or inline without one. With `grace` (a shared store), a
    signature that fails with the device's current key is checked once more after a key
    change in flight had time to land."""
    try:
        where = topics.parse(topic)
    except ValueError as exc:
        raise Rejected("topic_mismatch", str(exc)) from exc
    try:
        parsed, claims = proof.decode(payload, max_bytes)
    except proof.ProofError as exc:
        raise Rejected(exc.reason, str(exc)) from exc
    if (claims.site, claims.device) != (where.site, where.device):
        raise Rejected("topic_mismatch", "proof site/device differ from its topic")
    device = await db.get_device(claims.site, claims.device)
    if device is None or device.ed25519 is None:
        raise Rejected("unknown_device", f"no enrolled device {claims.site}/{claims.device}")
    public, room = device.ed25519, device.room
    start = await (starts or KeyStarts()).get(db, device)
    if claims.seq < start:
        epoch = await db.device_key_at(claims.site, claims.device, claims.seq)
        if epoch is None:
            raise Rejected("bad_signature", f"no key of this device covers seq {claims.seq}")
        public, room = epoch.ed25519, epoch.room
    qr_message = _qr_message(claims)
    checks = [(public, parsed.signing_input, parsed.signature)]
    if qr_message is not None:
        checks.append((public, qr_message, b64.decode(claims.qr)))
    valid = await (pool.valid(checks) if pool is not None else sigpool.inline(checks))
    if not valid[0]:
        if claims.seq >= start:
            for old in await db.device_keys(claims.site, claims.device):
                if old.ed25519 != public and jws.verify(parsed, old.ed25519):
                    raise Rejected("retired_key", f"seq {claims.seq} is signed with a retired key")
            if grace is not None and await grace.wait(claims.site, claims.device):
                again = await db.get_device(claims.site, claims.device)
                if again is not None and again.ed25519 != device.ed25519:
                    return await verify(
                        db,
                        offsets,
                        topic,
                        payload,
                        received_ms,
                        max_bytes,
                        clock_tolerance_ms,
                        starts,
                        pool,
                    )
        raise Rejected(
            "bad_signature", f"signature does not verify with the key of seq {claims.seq}"
        )
    if claims.room != room:
        raise Rejected("wrong_room", f"proof names room {claims.room}, device is in {room}")

    compact = payload.decode("ascii")
    link = chain.link(compact)
    late = claims.seq <= device.last_seq
    if late:
        stored = await db.proof_hash(claims.site, claims.device, claims.seq)
        if stored == link:
            raise Rejected("duplicate", f"seq {claims.seq} already stored")
        if stored is not None:
            raise Rejected("fork", f"a different proof with seq {claims.seq} is already stored")
        await _check_late(db, claims, link)
    else:
        head = device.last_hash
        if claims.seq == device.last_seq + 1 and head and claims.prev != head:
            raise Rejected(
                "chain_broken", f"seq {claims.seq} does not chain to seq {device.last_seq}"
            )
        if device.last_iat is not None and not _back_by_step(
            claims.iat, device.last_iat, claims.clock_step_ms
        ):
            raise Rejected("clock", "iat goes backwards further than a declared clock step")
    if claims.seq == 1 and claims.prev != chain.GENESIS:
        raise Rejected("chain_broken", "the first proof must chain to the genesis hash")
    gap = (device.last_seq + 1, claims.seq - 1) if claims.seq > device.last_seq + 1 else None

    if claims.iat - received_ms > clock_tolerance_ms:
        raise Rejected(
            "clock", f"iat is {claims.iat - received_ms} ms in the future", transient=True
        )
    if slots.slot_of(claims.iat, claims.slot_s) != claims.slot:
        raise Rejected("schema", "slot does not match iat")
    if qr_message is None or not valid[1]:
        raise Rejected("bad_token", "the displayed QR token does not verify")

    sample = claims.iat - received_ms
    previous = device.clock_offset_ms
    if claims.clock_step_ms is not None and not late:
        # The device's clock was stepped back: the samples before the step are wrong.
        offsets.reset(claims.site, claims.device)
        previous = None
    # A proof drained late from the outbox says nothing about the clock: keep the estimate.
    fresh = not late and (previous is None or sample >= previous - claims.slot_s * 1000)
    offset = offsets.add(claims.site, claims.device, sample, previous) if fresh else previous
    row = store.ProofRow(
        site=claims.site,
        device=claims.device,
        seq=claims.seq,
        slot=claims.slot,
        iat=claims.iat,
        received_at=received_ms,
        jws=compact,
        hash=link,
        gap_before=gap is not None and device.last_seq > 0,
    )
    return Accepted(
        row=row,
        claims=claims,
        clock_offset_ms=int(offset if offset is not None else sample),
        late=late,
        gap=gap if device.last_seq > 0 else None,
    )


async def verify_report(
    db: database.Database,
    topic: str,
    payload: bytes,
    allowed: frozenset[str],
    received_ms: int,
    clock_tolerance_ms: int,
) -> tuple[store.Device, report.Report]:
    """A device's signed status, telemetry or command result (`protocol.report`), checked
    against its enrolled key; a report queued before a key change verifies with the device's
    earlier key. Rejected reasons: unsigned, oversize, malformed, bad_header, schema,
    topic_mismatch, unknown_device, bad_signature, clock."""
    try:
        where = topics.parse(topic)
        parsed, claims = report.decode(payload, allowed)
    except ValueError as exc:
        raise Rejected(getattr(exc, "reason", "topic_mismatch"), str(exc)) from exc
    if (claims.site, claims.device) != (where.site, where.device):
        raise Rejected("topic_mismatch", "report site/device differ from its topic")
    device = await db.get_device(claims.site, claims.device)
    if device is None or device.ed25519 is None:
        raise Rejected("unknown_device", f"no enrolled device {claims.site}/{claims.device}")
    if not jws.verify(parsed, device.ed25519):
        earlier = await db.device_keys(claims.site, claims.device)
        if not any(jws.verify(parsed, old.ed25519) for old in earlier):
            raise Rejected("bad_signature", "report is not signed by the device")
    if claims.iat - received_ms > clock_tolerance_ms:
        raise Rejected("clock", f"iat is {claims.iat - received_ms} ms in the future")
    return device, claims


def _qr_message(claims: proof.Claims) -> bytes | None:
    """What the proof's QR token must sign; None when its names cannot make a token."""
    try:
        return qrtoken.message(claims.site, claims.device, claims.room, claims.slot)
    except ValueError:
        return None


async def _check_late(db: database.Database, claims: proof.Claims, link: str) -> None:
    """A late proof must link to the stored proof before it and the one after it, and its
    iat must lie between theirs."""
    before = await db.get_proof(claims.site, claims.device, claims.seq - 1)
    if before is not None:
        if claims.prev != before.hash:
            raise Rejected("chain_broken", f"late seq {claims.seq} does not chain to seq - 1")
        if not _back_by_step(claims.iat, before.iat, claims.clock_step_ms):
            raise Rejected("clock", f"late seq {claims.seq} is older than its predecessor")
    after = await db.get_proof(claims.site, claims.device, claims.seq + 1)
    if after is not None:
        try:
            _, next_claims = proof.decode(after.jws, len(after.jws))
        except proof.ProofError as exc:
            raise Rejected("chain_broken", f"stored seq {claims.seq + 1} unreadable") from exc
        if next_claims.prev != link:
            raise Rejected("chain_broken", f"seq {claims.seq + 1} does not chain to late seq")
        if not _back_by_step(after.iat, claims.iat, next_claims.clock_step_ms):
            raise Rejected("clock", f"late seq {claims.seq} is newer than its successor")


def _back_by_step(iat: int, previous_iat: int, step_ms: int | None) -> bool:
    """A chain's iat never goes back, except by at most the clock step back that the later
    proof declares, signed, in `clock_step_ms` (docs/protocol.md, "Clock steps")."""
    return iat >= previous_iat - (step_ms or 0)
