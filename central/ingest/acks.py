"""End-to-end acknowledgements: central tells each device, signed, which proofs it settled.

A device keeps a proof until an ack covers its seq (`protocol.ack`, docs/protocol.md
"Acknowledgements"), whatever the broker said. Settled: stored (now, or before: a duplicate)
or refused, after the device's signature verified, for a reason that cannot change (fork,
chain_broken, a clock going back, bad_token, wrong_room, retired_key). Never settled: anything
whose signature did not verify (an outsider could otherwise make a device drop a genuine
proof) and a proof from the future (`pending`: kept by the device, stored once its time
comes).

Batched: one ack per device per `ack_interval_s`, sent that long after the first seq to
report (or at once when a batch holds MAX_BATCH seqs). Also sent, with the device's stored
head, when the device comes online (acks lost while it was away are replaced) and right
after enrollment (a new device learns at once that central acks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import typing

from central.core import clock as clock_mod
from central.core import keyring
from central.storage import database
from edge_agent.protocol import ack
from edge_agent.protocol import topics

log = logging.getLogger(__name__)
MAX_BATCH = 2000
# Refusals of a validly signed proof that no retry can change: acked as settled.
SETTLED_REASONS = frozenset(
    {"duplicate", "fork", "chain_broken", "clock", "bad_token", "wrong_room", "retired_key"}
)
Publish = typing.Callable[[str, bytes], typing.Awaitable[None]]


@dataclasses.dataclass
class _Batch:
    stored: set[int] = dataclasses.field(default_factory=set)
    missing: set[int] = dataclasses.field(default_factory=set)
    pending: set[int] = dataclasses.field(default_factory=set)
    ranges_missing: list[tuple[int, int]] = dataclasses.field(default_factory=list)

    def size(self) -> int:
        return len(self.stored) + len(self.pending) + len(self.ranges_missing)


class Acker:
    def __init__(
        self,
        db: database.Database,
        keys: keyring.Keyring,
        clock: clock_mod.Clock,
        interval_s: float,
        publish: Publish,
        on_sent: typing.Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock
        self.interval_s = interval_s
        self.publish = publish
        self.on_sent = on_sent
        self.sent = 0
        self._batches: dict[tuple[str, str], _Batch] = {}
        self._timers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    def settled(self, site: str, device: str, seq: int) -> None:
        self._batch(site, device).stored.add(seq)
        self._schedule(site, device)

    def pending(self, site: str, device: str, seq: int) -> None:
        self._batch(site, device).pending.add(seq)
        self._schedule(site, device)

    def missing(self, site: str, device: str, first: int, last: int) -> None:
        """A gap central saw: asked for explicitly in the next ack."""
        self._batch(site, device).ranges_missing.append((first, last))
        self._schedule(site, device)

    async def online(self, site: str, device: str) -> None:
        """The device's stored head, at once: replaces acks lost while it was away, and tells
        a device central acknowledges."""
        found = await self.db.get_device(site, device)
        if found is None or found.ed25519 is None:
            return
        if found.last_seq > 0:
            self._batch(site, device).stored.add(found.last_seq)
        else:
            self._batch(site, device)
        await self.flush(site, device)

    def _batch(self, site: str, device: str) -> _Batch:
        return self._batches.setdefault((site, device), _Batch())

    def _schedule(self, site: str, device: str) -> None:
        key = (site, device)
        if self._batches[key].size() >= MAX_BATCH:
            self._timers.pop(key, None)
            task = asyncio.create_task(self.flush(site, device))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        elif key not in self._timers:
            self._timers[key] = asyncio.create_task(self._later(site, device))

    async def _later(self, site: str, device: str) -> None:
        await asyncio.sleep(self.interval_s)
        self._timers.pop((site, device), None)
        await self.flush(site, device)

    async def flush(self, site: str, device: str) -> None:
        """Sign and publish the device's batch (several acks if it has many ranges)."""
        batch = self._batches.pop((site, device), None)
        if batch is None:
            return
        try:
            found = await self.db.get_device(site, device)
            if found is None or found.ed25519 is None:
                return
            stored = ack.compress(batch.stored)
            pending = ack.compress(batch.pending - batch.stored)
            missing = _merge(batch.ranges_missing, batch.stored)
            n = ack.MAX_RANGES
            parts = max(1, -(-max(len(stored), len(pending), len(missing)) // n))
            for part in range(parts):
                signed = ack.sign(
                    self.keys.signing,
                    site,
                    device,
                    found.ed25519,
                    stored[part * n : (part + 1) * n],
                    missing[part * n : (part + 1) * n],
                    pending[part * n : (part + 1) * n],
                    self.clock.now_ms(),
                )
                await self.publish(topics.topic(site, device, "cmd"), signed.encode())
                self.sent += 1
                self.on_sent()
        except Exception as exc:  # the broker or the store went away: the device re-sends
            log.info("ack to %s/%s not sent (%s); the device will send again", site, device, exc)

    async def close(self) -> None:
        timers = [*self._timers.values(), *self._flushing]
        for task in timers:
            task.cancel()
        await asyncio.gather(*timers, return_exceptions=True)


def _merge(ranges: list[tuple[int, int]], stored: set[int]) -> ack.Ranges:
    """Missing ranges, less what the same batch stored (a gap filled meanwhile)."""
    seqs: set[int] = set()
    out: list[tuple[int, int]] = []
    for first, last in ranges:
        if last - first < 10_000:
            seqs.update(s for s in range(first, last + 1) if s not in stored)
        else:
            out.append((first, last))  # huge: asked for as a whole
    return tuple(sorted({*ack.compress(seqs), *out}))
