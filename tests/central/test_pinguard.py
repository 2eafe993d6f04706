"""The Argon2 verification pool (issue 13, F3) with real threads: bounded, fair by client."""

from __future__ import annotations

import asyncio
import threading

import pytest

from central.checkin import pinguard
from central.core import errors


async def test_the_verify_pool_is_bounded_and_fair_between_clients() -> None:
    """One thread and eight places: a client holds at most half (4); waiting calls are served
    round-robin by client, so a later client's call overtakes an earlier client's backlog."""
    pool = pinguard.VerifyPool(workers=1, queue=8)
    gate = threading.Event()
    order: list[str] = []

    def work(name: str) -> str:
        gate.wait(10)
        order.append(name)
        return name

    calls = []
    try:
        for name in ("a1", "a2", "a3", "a4"):
            calls.append(asyncio.create_task(pool.run("a", work, name)))
            await asyncio.sleep(0)
        with pytest.raises(errors.ApiError) as refused:  # a's share is taken
            await pool.run("a", work, "a5")
        assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "1"
        calls.append(asyncio.create_task(pool.run("b", work, "b1")))
        await asyncio.sleep(0)
        assert pool.admitted == 5
        gate.set()
        assert await asyncio.gather(*calls) == ["a1", "a2", "a3", "a4", "b1"]
        assert order == ["a1", "a2", "b1", "a3", "a4"]  # first come first served: b1 last
        assert pool.admitted == 0
    finally:
        gate.set()
        pool.close()
