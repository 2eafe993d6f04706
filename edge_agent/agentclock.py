"""The agent's clock: the system clock, except that it never goes backwards.

When NTP steps the wall clock back, the agent keeps counting from where it was at the rate of
the monotonic clock until the wall clock catches up, so slots and proof times stay strictly
increasing; central estimates the resulting offset from the proofs.
"""

from __future__ import annotations

import time
import typing


class AgentClock:
    def __init__(
        self,
        floor_ms: int = 0,
        wall: typing.Callable[[], float] = time.time,
        monotonic: typing.Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._last_ms = floor_ms
        self._last_mono = monotonic()

    def now_ms(self) -> int:
        wall_ms = int(self._wall() * 1000)
        mono = self._monotonic()
        projected = self._last_ms + int((mono - self._last_mono) * 1000)
        now = max(wall_ms, projected)
        self._last_ms, self._last_mono = now, mono
        return now

    def stepped_back_ms(self) -> int:
        """How far the wall clock is behind the agent's clock (0 when in step)."""
        return max(0, self._last_ms - int(self._wall() * 1000))
