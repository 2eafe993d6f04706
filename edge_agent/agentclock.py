"""The agent's clock: the system clock, with the rule for a clock stepped back (docs/protocol.md,
"Clock steps").

- A wall clock behind the agent's last reading by at most `hold_ms` (a small NTP step back)
  is held: the agent's clock stands still until the wall clock catches up, so slots and proof
  times never go back, and proofs are stamped ahead by no more than the step, for no longer
  than the step.
- A larger step back (a clock that ran ahead, a day say, and was corrected; or a start-up
  whose last proof was stamped by a clock that ran ahead) is released at once: the agent's
  clock follows the wall clock, logs the step, counts it, and the next proof declares it in
  its signed `clock_step_ms` claim, the only way a chain's iat and slot may go back.
"""

from __future__ import annotations

import logging
import time
import typing

log = logging.getLogger("roomproof.agent.clock")

HOLD_MS = 2_000


class AgentClock:
    def __init__(
        self,
        floor_ms: int = 0,
        wall: typing.Callable[[], float] = time.time,
        hold_ms: int = HOLD_MS,
    ) -> None:
        self._wall = wall
        self._last_ms = floor_ms
        self.hold_ms = hold_ms
        self.steps = 0  # steps back released since start
        self.last_step_ms = 0  # size of the latest released step
        self.pending_step_ms = 0  # released but not yet declared in a proof
        self.stepped_at: float | None = None  # time.monotonic() of the latest step back

    def now_ms(self) -> int:
        wall_ms = int(self._wall() * 1000)
        behind = self._last_ms - wall_ms
        if behind <= 0:
            now = wall_ms
        elif behind <= self.hold_ms:
            now = self._last_ms
        else:
            self.steps += 1
            self.last_step_ms = behind
            self.stepped_at = time.monotonic()
            self.pending_step_ms += behind
            log.warning(
                "the system clock went back %.1f s (it had run ahead?): following it; the next"
                " proof declares the step",
                behind / 1000,
            )
            now = wall_ms
        self._last_ms = now
        return now

    def declared(self, step_ms: int) -> None:
        """A proof declaring `step_ms` is stored: that much of the step is accounted for."""
        self.pending_step_ms = max(0, self.pending_step_ms - step_ms)

    def stepped_back_ms(self) -> int:
        """How far the wall clock is behind the agent's clock (0 when in step)."""
        return max(0, self._last_ms - int(self._wall() * 1000))

    def state(self) -> dict[str, int]:
        """For telemetry: the steps back seen since start and the latest one's size."""
        return {"steps_back": self.steps, "last_step_ms": self.last_step_ms}
