"""Sliding-window rate limits for the public endpoints, answered with 429 and Retry-After.

Per process and in memory (several centrals each count their own share). Limits per client
address must allow a whole lecture hall behind one campus NAT address; per-student limits
are the tight ones.
"""

from __future__ import annotations

import collections
import math

from central.core import errors


class RateLimiter:
    """At most `limit` hits per key in a sliding window."""

    def __init__(self, limit: int, window_s: float = 60) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, collections.deque[float]] = {}

    def retry_after(self, key: str, now: float) -> float:
        """0 and the hit is counted, or the seconds until this key may try again."""
        hits = self._hits.setdefault(key, collections.deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return hits[0] + self.window_s - now
        hits.append(now)
        if len(self._hits) > 100_000:
            self._hits = {k: v for k, v in self._hits.items() if v}
        return 0.0

    def waiting(self, key: str, now: float) -> float:
        """The seconds until `key` may try again (0: now), counting nothing: with `add`, a
        limit on failures only (checked before the attempt, counted after it failed)."""
        hits = self._hits.get(key)
        if hits is None:
            return 0.0
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        return hits[0] + self.window_s - now if len(hits) >= self.limit else 0.0

    def add(self, key: str, now: float) -> None:
        self._hits.setdefault(key, collections.deque()).append(now)
        if len(self._hits) > 100_000:
            self._hits = {k: v for k, v in self._hits.items() if v}

    def allow(self, key: str, now: float) -> bool:
        return self.retry_after(key, now) == 0.0

    def check(self, key: str, now: float, message: str) -> None:
        """Raises 429 rate_limited with Retry-After (whole seconds, at least 1)."""
        wait = self.retry_after(key, now)
        if wait > 0:
            raise limited(wait, message)


def limited(wait_s: float, message: str) -> errors.ApiError:
    """429 rate_limited with Retry-After (whole seconds, at least 1)."""
    seconds = max(1, math.ceil(wait_s))
    return errors.ApiError(
        429,
        "rate_limited",
        message,
        {"retry_after_s": seconds},
        headers={"Retry-After": str(seconds)},
    )
