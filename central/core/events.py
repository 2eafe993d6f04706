"""In-process fan-out of live events (proofs, check-ins, device status) to SSE clients.

Each subscriber has a bounded queue; a client too slow to keep up is dropped, never the process.
"""

from __future__ import annotations

import asyncio
import logging
import typing

log = logging.getLogger(__name__)
QUEUE_SIZE = 1000
# Events about one check-in or attendance record: their `session_id` says whose course they are.
SESSION_KINDS = frozenset({"checkin", "checkout", "attendance"})


class Hub:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[tuple[str, dict[str, typing.Any]] | None]] = set()

    def subscribe(self) -> asyncio.Queue[tuple[str, dict[str, typing.Any]] | None]:
        queue: asyncio.Queue[tuple[str, dict[str, typing.Any]] | None] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[tuple[str, dict[str, typing.Any]] | None]) -> None:
        self._subscribers.discard(queue)

    def publish(self, kind: str, data: dict[str, typing.Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait((kind, data))
            except asyncio.QueueFull:
                log.warning("dropped a slow event-stream client")
                self._subscribers.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)

    def close(self) -> None:
        for queue in list(self._subscribers):
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)
        self._subscribers.clear()

    @property
    def size(self) -> int:
        return len(self._subscribers)
