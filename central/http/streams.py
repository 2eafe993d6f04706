"""Open event streams, by token: at most `limit` at once for one token (the next answers 429),
and every stream of a token ends within RECHECK_S of that token being revoked or expiring.

Revocation may happen anywhere: through the API of this process, through `central token
revoke` (another process on the same SQLite file) or through another central sharing the
PostgreSQL database. So nothing waits to be told: while a token has streams open here, one task
per token asks the store again every RECHECK_S (one query per token, however many streams it
has) with the same check the request passed, and ends all of the token's streams once it fails.
The same task ends the streams whose client went away, so their places are free within
RECHECK_S rather than at the next write. The limit counts the streams of this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import typing

from aiohttp import web

from central.core import errors
from central.core import events

log = logging.getLogger(__name__)
RECHECK_S = 0.5
RETRY_AFTER_S = 5

Queue = asyncio.Queue[tuple[str, dict[str, typing.Any]] | None]
# Asks the store again whether the stream's token is still good: raises errors.ApiError
# (401 unknown or revoked, 403 no longer allowed) when it is not.
Recheck = typing.Callable[[], typing.Awaitable[object]]


@dataclasses.dataclass(eq=False)
class Stream:
    """One open event stream: read `queue` until None (the hub closed, or the token ended)."""

    key: str
    queue: Queue
    registry: Streams
    request: web.Request

    async def close(self) -> None:
        await self.registry.close(self)


@dataclasses.dataclass(eq=False)
class _Token:
    recheck: Recheck
    streams: set[Stream] = dataclasses.field(default_factory=set)
    watcher: asyncio.Task[None] | None = None


class Streams:
    def __init__(self, hub: events.Hub, limit: int, recheck_s: float = RECHECK_S) -> None:
        self.hub = hub
        self.limit = limit
        self.recheck_s = recheck_s
        self._tokens: dict[str, _Token] = {}

    def open(self, request: web.Request, key: str, recheck: Recheck) -> Stream:
        """A new stream of `request` for the token `key` (after the request's auth check
        passed), or 429 too_many_streams when the token has `limit` open already."""
        token = self._tokens.get(key)
        if token is not None and len(token.streams) >= self.limit:
            raise errors.ApiError(
                429,
                "too_many_streams",
                f"at most {self.limit} open event streams per token; close one first",
                {"limit": self.limit},
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        if token is None:
            token = self._tokens[key] = _Token(recheck)
        stream = Stream(key, self.hub.subscribe(), self, request)
        token.streams.add(stream)
        if token.watcher is None:
            token.watcher = asyncio.create_task(self._watch(key, token), name="stream-token-watch")
        return stream

    async def close(self, stream: Stream) -> None:
        self.hub.unsubscribe(stream.queue)
        token = self._tokens.get(stream.key)
        if token is None or stream not in token.streams:
            return
        token.streams.discard(stream)
        if token.streams:
            return
        del self._tokens[stream.key]
        if token.watcher is not None:
            token.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await token.watcher

    def count(self, key: str) -> int:
        token = self._tokens.get(key)
        return 0 if token is None else len(token.streams)

    async def _watch(self, key: str, token: _Token) -> None:
        """Until the token's last stream closes (which cancels this task)."""
        while True:
            await asyncio.sleep(self.recheck_s)
            for stream in list(token.streams):
                if stream.request.transport is None:  # the client went away
                    self._end(stream)
            try:
                await token.recheck()
            except errors.ApiError as exc:
                log.info(
                    "ending %d event stream(s) of %s: %s", len(token.streams), key, exc.message
                )
                for stream in list(token.streams):
                    self._end(stream)
            except Exception as exc:  # the store hiccuped: keep the streams, ask again
                log.warning("could not recheck the token of %s's event streams: %s", key, exc)

    def _end(self, stream: Stream) -> None:
        """Make the stream's reader stop: what is queued goes, then None (as Hub.close does)."""
        self.hub.unsubscribe(stream.queue)
        while not stream.queue.empty():
            stream.queue.get_nowait()
        stream.queue.put_nowait(None)
