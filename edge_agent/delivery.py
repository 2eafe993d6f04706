"""When a published proof may leave the outbox, and when it must be published again.

A proof the broker PUBACKed is only `sent`: it is deleted when central's signed ack
(`protocol.ack`) says central settled its seq. A sent proof is re-sent when central has
shown it is past it without settling it: an ack covers a later seq (or asks for it as
`missing`), and `ack_timeout_s` has passed since it was sent (several central processes may
ack out of order). The wait doubles per re-send of that proof, up to `retry_max_s`. While
central sends no acks at all (down, or unreachable) nothing is re-sent: the broker holds what
it holds, and duplicates would only pile up there. A proof stamped after this device's
current time (its clock ran ahead and was corrected) waits for that time: central refuses it
as from the future until then.

Before central's first ack (an older central never sends one) a proof leaves on its PUBACK,
as rows outside the chain (telemetry, key changes) always do.

Thread-safe: the agent calls it through asyncio.to_thread (each call touches the outbox).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import typing

from edge_agent import outbox as outbox_mod
from edge_agent.protocol import ack
from edge_agent.protocol import proof

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Sent:
    id: int
    at: float  # monotonic time it was last published
    tries: int  # re-sends so far


class Delivery:
    def __init__(
        self,
        outbox: outbox_mod.Outbox,
        ack_timeout_s: float,
        retry_max_s: float,
        monotonic: typing.Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = outbox
        self.ack_timeout_s = ack_timeout_s
        self.retry_max_s = retry_max_s
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self.acks_enabled = outbox.acks_enabled()
        if not self.acks_enabled and outbox.drop_sent():  # the acks flag was removed by hand
            log.warning("acks are no longer expected: sent proofs left on their PUBACK")
        now = monotonic()
        self._sent = {seq: _Sent(i, now, 0) for i, seq in outbox.sent_proofs()}
        self.progress = 0  # the highest seq an ack settled or asked for
        self.acks_taken = 0
        self.resent = 0
        self._pending_logged: ack.Ranges = ()

    def published(self, item: outbox_mod.Item) -> None:
        """The broker PUBACKed `item`: delete it, or (a proof, with acks) mark it sent."""
        if item.seq is None or not self.acks_enabled:
            self.outbox.ack(item.id)
            return
        self.outbox.mark_sent(item.id)
        with self._lock:
            known = self._sent.get(item.seq)
            self._sent[item.seq] = _Sent(item.id, self.monotonic(), known.tries if known else 0)

    def take(self, found: ack.Ack) -> int:
        """Apply a verified ack; returns how many proofs it let go (missing ones are queued
        for publishing at once)."""
        if not self.acks_enabled:
            self.outbox.enable_acks()
            self.acks_enabled = True
            log.info("central acknowledges proofs end to end: each stays until central has it")
        deleted = self.outbox.settle(found.stored)
        again: list[int] = []
        with self._lock:
            self.acks_taken += 1
            for seq in [s for s in self._sent if ack.covered(found.stored, s)]:
                del self._sent[seq]
            tops = [last for _, last in (*found.stored, *found.missing, *found.pending)]
            self.progress = max([self.progress, *tops])
            for seq, sent in self._sent.items():
                if ack.covered(found.missing, seq):
                    again.append(sent.id)
                    sent.tries += 1
                elif ack.covered(found.pending, seq):
                    sent.tries += 1  # alive at central, refused for now: back off
        if found.pending and found.pending != self._pending_logged:
            self._pending_logged = found.pending
            log.warning(
                "central cannot store proofs %s yet: stamped in the future (this clock ran"
                " ahead); they stay in the outbox and are sent again until central takes them",
                _spell(found.pending),
            )
        if again:
            self.outbox.resend(again)
            self.resent += len(again)
            log.warning("central asked again for proofs it lacks: re-sending %d", len(again))
        return deleted

    def due(self, now_ms: int) -> int:
        """Queue for publishing the sent proofs central is past without settling them; how
        many."""
        now = self.monotonic()
        with self._lock:
            candidates = {
                seq: sent
                for seq, sent in self._sent.items()
                if seq < self.progress
                and now - sent.at
                >= min(self.retry_max_s, self.ack_timeout_s * 2 ** min(sent.tries, 20))
            }
        if not candidates:
            return 0
        payloads = self.outbox.payloads([s.id for s in candidates.values()])
        again: dict[int, _Sent] = {}
        for seq, sent in candidates.items():
            payload = payloads.get(sent.id)
            if payload is None:  # gone meanwhile (settled, or dropped by the outbox bound)
                with self._lock:
                    if self._sent.get(seq) is sent:
                        del self._sent[seq]
                continue
            try:
                iat = proof.decode(payload)[1].iat
            except proof.ProofError:
                iat = 0
            if iat <= now_ms:  # one from the future waits for its time
                again[seq] = sent
        if not again:
            return 0
        self.outbox.resend([s.id for s in again.values()])
        with self._lock:
            for seq, sent in again.items():
                if self._sent.get(seq) is sent:
                    sent.tries += 1
                    sent.at = now
        self.resent += len(again)
        log.warning(
            "central has not acknowledged proofs %s: sending them again",
            _spell(ack.compress(again)),
        )
        return len(again)

    @property
    def unacknowledged(self) -> int:
        with self._lock:
            return len(self._sent)


def _spell(ranges: ack.Ranges) -> str:
    shown = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in ranges[:5])
    return f"seq {shown}" + (" ..." if len(ranges) > 5 else "")
