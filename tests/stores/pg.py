"""A fresh PostgreSQL database per test on the machine's server (127.0.0.1:5432, user
postgres, trust auth), dropped afterwards; tests skip with the reason when it is unreachable."""

from __future__ import annotations

import collections.abc
import contextlib
import uuid

import asyncpg
import pytest

SERVER = "postgresql://postgres@127.0.0.1:5432"


@contextlib.asynccontextmanager
async def fresh_database() -> collections.abc.AsyncIterator[str]:
    """Yields the DSN of a new, empty database `roomproof_t_<uuid hex>`."""
    try:
        admin = await asyncpg.connect(f"{SERVER}/postgres", timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL is not reachable at {SERVER} as user postgres: {exc}")
    name = f"roomproof_t_{uuid.uuid4().hex}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{SERVER}/{name}"
        finally:
            # FORCE: a central killed by a test may leave its connections behind.
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
