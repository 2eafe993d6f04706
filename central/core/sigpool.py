"""Ed25519 verification off the event loop, batched.

A proof costs two verifies (its JWS and the QR token it carries), about 80 us each here, which
is most of what one event loop can spend per proof. libsodium runs without the GIL (cffi
releases it), so one worker thread verifies while the loop parses, queries and acknowledges
the next messages. Requests that arrive while the worker is busy wait in one list and go over
in one batch: one wake-up of the worker and one `call_soon_threadsafe` back per batch, not per
signature, so the hand-over costs little even at thousands of proofs a second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import typing

from edge_agent.protocol import keys

log = logging.getLogger(__name__)
Check = tuple[bytes, bytes, bytes]  # public key, message, signature
MAX_BATCH = 256


class SignaturePool:
    """`await pool.valid([(public, message, signature), ...])` -> one bool per check."""

    def __init__(self) -> None:
        self._pending: list[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[list[bool]], list[Check]]
        ]
        self._pending = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    async def valid(self, checks: typing.Sequence[Check]) -> list[bool]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[bool]] = loop.create_future()
        with self._wake:
            if self._closed:
                raise RuntimeError("the signature pool is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="roomproof-verify", daemon=True
                )
                self._thread.start()
            self._pending.append((loop, future, list(checks)))
            if len(self._pending) == 1:
                self._wake.notify()
        return await future

    def close(self) -> None:
        """Stops the worker after the requests already queued."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            results = [[_verify(check) for check in checks] for _, _, checks in batch]
            by_loop: dict[
                asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[bool]], list[bool]]]
            ]
            by_loop = {}
            for (loop, future, _), result in zip(batch, results, strict=True):
                by_loop.setdefault(loop, []).append((future, result))
            for loop, done in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, done)
                except RuntimeError:  # that loop has closed: nobody waits any more
                    continue


def _verify(check: Check) -> bool:
    """keys.verify answers False for anything malformed; whatever else goes wrong is logged
    and answered False too, so that no waiter is left without an answer."""
    try:
        return keys.verify(*check)
    except Exception:
        log.exception("signature check failed unexpectedly")
        return False


def _resolve(done: list[tuple[asyncio.Future[list[bool]], list[bool]]]) -> None:
    for future, result in done:
        if not future.done():  # cancelled meanwhile
            future.set_result(result)


async def inline(checks: typing.Sequence[Check]) -> list[bool]:
    """The same answers on the calling thread (tools, tests, one-off checks)."""
    return [keys.verify(public, message, signature) for public, message, signature in checks]
