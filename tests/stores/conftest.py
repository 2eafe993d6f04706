"""Both stores behind one fixture: every contract test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import collections.abc
import dataclasses
import pathlib
import typing

import pytest

from central.storage import database
from tests.stores import pg


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    make: typing.Callable[[], database.Database]  # a new, unopened handle on the test's database


@pytest.fixture()
async def pg_dsn() -> collections.abc.AsyncIterator[str]:
    async with pg.fresh_database() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "central.db"
        return Backend("sqlite", lambda: database.Database.sqlite(path))
    dsn = typing.cast(str, request.getfixturevalue("pg_dsn"))
    return Backend("postgres", lambda: database.Database.postgres(dsn))


@pytest.fixture()
async def db(backend: Backend) -> collections.abc.AsyncIterator[database.Database]:
    handle = backend.make()
    await handle.open()
    yield handle
    await handle.close()


# The in-process central of tests/central, for test_central_pg.py (which sets database_url).
from tests.central.conftest import central  # noqa: E402, F401
from tests.central.conftest import central_overrides  # noqa: E402, F401
from tests.central.conftest import clock  # noqa: E402, F401
