"""Which store central runs on: PostgreSQL when `database_url` is set (several central
processes share it), else the SQLite file in data_dir (one process per site)."""

from __future__ import annotations

import sqlite3
import typing

import asyncpg

from central import pg_store
from central import settings as settings_mod
from central import sqlite_store
from central import store

# SQLSTATE classes of a database that is down or refusing, not of a refused write:
# connection (08), resources (53), prerequisite state (55), operator intervention (57), system (58).
_OUTAGE_CLASSES = frozenset({"08", "53", "55", "57", "58"})


def is_outage(exc: BaseException) -> bool:
    """True when the database itself failed, so the work should be retried later."""
    # InternalClientError: a connection the server terminated mid-operation ("cannot switch
    # to state ...", asyncpg's pool hands it out once more).
    if isinstance(
        exc,
        sqlite3.OperationalError | OSError | asyncpg.InterfaceError | asyncpg.InternalClientError,
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in _OUTAGE_CLASSES
    return False


def make(settings: settings_mod.CentralSettings) -> store.Store:
    """A store for central's own use, not yet opened."""
    if settings.database_url:
        return pg_store.PgStore(settings.database_url)
    # SqliteStore's methods are typed Awaitable, the protocol's async (Coroutine): the one
    # store that replaces both removes this cast.
    return typing.cast(store.Store, sqlite_store.SqliteStore(settings.db_path))
