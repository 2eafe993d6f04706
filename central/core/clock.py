"""Central's notion of now, injected everywhere time matters (proof ingest, check-ins,
session statuses) so that a test can walk a whole week of sessions step by step, and so that
one place says which clock central trusts."""

from __future__ import annotations

import time
import typing


class Clock(typing.Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    """Wall-clock time of the host (NTP-disciplined in production)."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)


class SettableClock:
    """A clock that only moves when told: for tests and replays of recorded days."""

    def __init__(self, start_ms: int) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def set(self, now_ms: int) -> None:
        self._now_ms = now_ms

    def advance(self, delta_ms: int) -> None:
        self._now_ms += delta_ms
