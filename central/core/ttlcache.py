"""A small time-bounded cache for the check-in hot path: what changes rarely (rooms, sessions,
rosters, a device's head state) is read from the store at most once per TTL per process, so
that a hall scanning at once costs the store one write per check-in, not a dozen reads."""

from __future__ import annotations

import time
import typing

K = typing.TypeVar("K")
V = typing.TypeVar("V")


class TTLCache(typing.Generic[K, V]):
    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._items: dict[K, tuple[float, V]] = {}

    async def get(self, key: K, load: typing.Callable[[], typing.Awaitable[V]]) -> V:
        now = time.monotonic()
        found = self._items.get(key)
        if found is not None and found[0] > now:
            return found[1]
        value = await load()
        if len(self._items) >= self.max_entries:
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
            if len(self._items) >= self.max_entries:
                self._items.clear()
        self._items[key] = (now + self.ttl_s, value)
        return value

    def forget(self, key: K) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()
