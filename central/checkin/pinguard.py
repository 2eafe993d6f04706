"""Student PINs against guessing and floods.

- Argon2id verifications (about 130 ms of CPU each here) run on a pool of
  `pin_verify_concurrency` threads: that pool is the semaphore. Up to `pin_verify_queue` more
  may wait for a thread; waiting ones are served round-robin by client address, so a flood
  from one client delays another client's check-in by at most one verification per thread. A
  client may hold at most half of (threads + queue). Beyond either bound the request answers
  429 at once, spending no CPU: a flood of wrong PINs is refused while a genuine check-in
  from elsewhere still goes through.
- Failed PINs per claimed student id, known or not (an unknown id answers exactly like a
  wrong PIN, lockouts included): after `pin_failures_before_backoff` failures every further
  one locks the id for `pin_backoff_s`, doubling up to `pin_backoff_max_s`; each lock is
  written to the audit log. A correct PIN forgets the failures. A remembered browser (the
  credential cookie) never asks for the PIN, so a student whose id is under attack still
  checks in with one tap.
- Failed PINs per client address: at most `pin_failures_per_client_per_minute`.

Per process and in memory, as central/core/ratelimit.py (several centrals each count their own).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import typing

from central.checkin import students
from central.core import errors
from central.core import ratelimit
from central.core import settings as settings_mod
from central.storage import database

T = typing.TypeVar("T")
FORGET_FAILURES_MS = 86_400_000  # a day without a wrong PIN starts the count afresh
MAX_TRACKED = 100_000
BUSY_RETRY_S = 1


def busy() -> errors.ApiError:
    return ratelimit.limited(BUSY_RETRY_S, "the server is busy checking PINs; try again")


class VerifyPool:
    """At most `workers` blocking calls at once, `queue` more waiting, fair between clients."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.per_client = max(1, self.capacity // 2)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="roomproof-argon2"
        )
        self._running = 0
        self._queued = 0
        # client -> its waiting turns; dict order is the round-robin order of clients
        self._waiting: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._held: collections.Counter[str] = collections.Counter()

    @property
    def admitted(self) -> int:
        return self._running + self._queued

    async def run(self, client: str, call: typing.Callable[..., T], *args: typing.Any) -> T:
        """`call(*args)` on a pool thread; ApiError 429 at once when the pool is full."""
        if self.admitted >= self.capacity or self._held[client] >= self.per_client:
            raise busy()
        self._held[client] += 1
        try:
            await self._turn(client)
            future = asyncio.get_running_loop().run_in_executor(self._executor, call, *args)
            # The thread is given back when it is done, even if this waiter was cancelled.
            future.add_done_callback(self._release)
            return await asyncio.shield(future)
        finally:
            self._held[client] -= 1
            if self._held[client] <= 0:
                del self._held[client]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _turn(self, client: str) -> None:
        if self._running < self.workers and not self._queued:
            self._running += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client, collections.deque()).append(turn)
        self._queued += 1
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # given a thread, then cancelled
                self._release()
            else:
                waiting = self._waiting.get(client)
                if waiting is not None and turn in waiting:
                    waiting.remove(turn)
                    self._queued -= 1
                    if not waiting:
                        del self._waiting[client]
            raise

    def _release(self, _: object = None) -> None:
        """A thread is free: the next client in turn gets it."""
        self._running -= 1
        while self._waiting:
            client = next(iter(self._waiting))
            waiting = self._waiting.pop(client)
            turn = waiting.popleft()
            self._queued -= 1
            if waiting:
                self._waiting[client] = waiting  # to the back of the round
            if not turn.done():
                self._running += 1
                turn.set_result(None)
                return


@dataclasses.dataclass
class _Failures:
    count: int = 0
    last_ms: int = 0
    locked_until_ms: int = 0


class PinGuard:
    def __init__(self, settings: settings_mod.CentralSettings, db: database.Database) -> None:
        self.settings = settings
        self.db = db
        self.pool = VerifyPool(settings.pin_verify_concurrency, settings.pin_verify_queue)
        self.per_client = ratelimit.RateLimiter(settings.pin_failures_per_client_per_minute)
        self._failures: dict[tuple[str, str], _Failures] = {}

    async def verify(self, site: str, student_id: str, pin: str, client: str, now_ms: int) -> bool:
        """True for the student's PIN. False for a wrong PIN or an unknown student, alike.
        ApiError 429 while the id is locked, the client has failed too often or the
        verification pool is full."""
        key = (site, student_id)
        failures = self._failures.get(key)
        if failures is not None and failures.locked_until_ms > now_ms:
            raise ratelimit.limited(
                (failures.locked_until_ms - now_ms) / 1000,
                "too many wrong PINs for this student id; wait",
            )
        wait = self.per_client.waiting(client, now_ms / 1000)
        if wait > 0:
            raise ratelimit.limited(wait, "too many wrong PINs from this address; wait")
        student = await self.db.get_student(site, student_id)
        matches = await self.pool.run(
            client, students.pin_matches, students.pin_hash_of(student), pin
        )
        if matches and student is not None:
            self._failures.pop(key, None)
            return True
        self.per_client.add(client, now_ms / 1000)
        await self._failed(key, client, now_ms)
        return False

    def close(self) -> None:
        self.pool.close()

    async def _failed(self, key: tuple[str, str], client: str, now_ms: int) -> None:
        failures = self._failures.get(key)
        if failures is None:
            if len(self._failures) >= MAX_TRACKED:
                self._failures = {
                    k: v for k, v in self._failures.items() if v.locked_until_ms > now_ms
                }
            failures = self._failures[key] = _Failures()
        if now_ms - failures.last_ms > FORGET_FAILURES_MS:
            failures.count = 0
        failures.count += 1
        failures.last_ms = now_ms
        beyond = failures.count - self.settings.pin_failures_before_backoff
        if beyond < 0:
            return
        wait_s = min(
            self.settings.pin_backoff_max_s, self.settings.pin_backoff_s * 2 ** min(beyond, 30)
        )
        failures.locked_until_ms = now_ms + int(wait_s * 1000)
        site, student_id = key
        await self.db.audit(
            "central",  # the actor: central decided this on its own
            "student_pin_locked",
            f"{site}/{student_id}",
            f"{failures.count} wrong PINs in a row; locked for {wait_s:g} s;"
            f" the last from {client}",
            now_ms,
            site,
        )
