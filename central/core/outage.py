"""The store's write health, process-wide: the outcome of the last write decides it.

Every part of central that writes (the API, the bridge, the webhook dispatcher) reports its
outcome here; a change of state (down, back) is logged once, not once per failed request."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
BACKOFF_FIRST_S = 1.0
BACKOFF_CAP_S = 60.0


class Tracker:
    def __init__(self) -> None:
        self.down = False
        self.reason = ""
        self.failures = 0  # consecutive, since the last success

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.reason = str(exc) or type(exc).__name__
        if not self.down:
            self.down = True
            log.error("store unavailable: %s; answering 503 until a write succeeds", self.reason)

    def succeeded(self) -> None:
        self.failures = 0
        if self.down:
            self.down = False
            log.warning("store available again (was: %s)", self.reason)

    def backoff_s(self) -> float:
        """Exponential in the consecutive failures, capped: how long to wait before retrying."""
        if self.failures == 0:
            return 0.0
        return min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2.0 ** min(self.failures - 1, 16))


STORE = Tracker()
