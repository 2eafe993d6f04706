"""The signature worker gives the same answers as verifying inline, under concurrency."""

from __future__ import annotations

import asyncio
import threading

import pytest

from central.core import sigpool
from edge_agent.protocol import keys


def _checks(count: int) -> tuple[list[sigpool.Check], list[bool]]:
    """Every third signature is wrong in a different way: bit flip, other key, other message."""
    key, other = keys.SigningKey.generate(), keys.SigningKey.generate()
    checks: list[sigpool.Check] = []
    expected: list[bool] = []
    for number in range(count):
        message = f"proof {number}".encode()
        signature = key.sign(message)
        if number % 3 == 1:
            flipped = bytes([signature[0] ^ 1]) + signature[1:]
            checks.append((key.public, message, flipped))
        elif number % 6 == 2:
            checks.append((other.public, message, signature))
        elif number % 6 == 5:
            checks.append((key.public, message + b"!", signature))
        else:
            checks.append((key.public, message, signature))
        expected.append(number % 3 == 0)
    return checks, expected


async def test_answers_match_inline_verification() -> None:
    checks, expected = _checks(12)
    pool = sigpool.SignaturePool()
    try:
        assert await pool.valid(checks) == expected
        assert await sigpool.inline(checks) == expected
        assert await pool.valid([]) == []
        # Malformed keys and signatures are False, not an exception in the worker.
        assert await pool.valid([(b"short", b"m", b"s" * 64), (b"k" * 32, b"m", b"")]) == [
            False,
            False,
        ]
    finally:
        pool.close()


async def test_many_concurrent_requests_each_get_their_own_answers() -> None:
    """Hundreds of waiters at once go over in batches; none gets another's results."""
    checks, expected = _checks(600)
    pool = sigpool.SignaturePool()
    try:
        results = await asyncio.gather(
            *(pool.valid(checks[i : i + 2]) for i in range(0, len(checks), 2))
        )
        assert [answer for pair in results for answer in pair] == expected
    finally:
        pool.close()


async def test_a_cancelled_waiter_does_not_disturb_the_others() -> None:
    checks, expected = _checks(60)
    pool = sigpool.SignaturePool()
    try:
        doomed = asyncio.ensure_future(pool.valid(checks))
        kept = asyncio.ensure_future(pool.valid(checks[:30]))
        doomed.cancel()
        assert await kept == expected[:30]
        assert doomed.cancelled()
        assert await pool.valid(checks[30:]) == expected[30:]
    finally:
        pool.close()


def test_two_event_loops_share_one_pool() -> None:
    """Each loop's answers come back on that loop (central's tests run several apps)."""
    checks, expected = _checks(90)
    pool = sigpool.SignaturePool()
    answers: dict[int, list[bool]] = {}

    async def ask(offset: int) -> list[bool]:
        results = await asyncio.gather(
            *(pool.valid([check]) for check in checks[offset : offset + 45])
        )
        return [result[0] for result in results]

    def run(offset: int) -> None:
        answers[offset] = asyncio.run(ask(offset))

    threads = [threading.Thread(target=run, args=(offset,)) for offset in (0, 45)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    pool.close()
    assert answers[0] + answers[45] == expected


async def test_a_closed_pool_refuses_new_work() -> None:
    checks, expected = _checks(3)
    pool = sigpool.SignaturePool()
    assert await pool.valid(checks) == expected
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        await pool.valid(checks)
