"""A fresh PostgreSQL database for each scale-out test (skipped when the server is away)."""

from __future__ import annotations

import collections.abc

import pytest

from tests.stores import pg


@pytest.fixture()
async def pg_dsn() -> collections.abc.AsyncIterator[str]:
    async with pg.fresh_database() as dsn:
        yield dsn
