"""Which store central runs on: PostgreSQL when `database_url` is set (several central
processes share it), else the SQLite file in data_dir (one process per site); and which of
its failures are outages (retry later) rather than refusals or bugs."""

from __future__ import annotations

import sqlite3

import asyncpg
import sqlalchemy as sa

from central.core import settings as settings_mod
from central.storage import database

# SQLSTATE classes of a database that is down or refusing, not of a refused write:
# connection (08), resources (53), prerequisite state (55), operator intervention (57), system (58).
_OUTAGE_CLASSES = frozenset({"08", "53", "55", "57", "58"})


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrapper (and its asyncpg adapter's)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    cause = exc.__cause__
    # The hot path (prepared.py) runs on the DBAPI cursor, so its errors arrive as the
    # asyncpg adapter's, not wrapped in DBAPIError: the driver's own is their cause.
    if isinstance(
        cause,
        asyncpg.PostgresError | asyncpg.InterfaceError | asyncpg.InternalClientError | OSError,
    ):
        return cause
    return exc


def is_outage(exc: BaseException) -> bool:
    """True when the database itself failed, so the work should be retried later."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True  # the connection broke mid-operation; the pool drops it
    if isinstance(exc, sa.exc.TimeoutError):
        return True  # no pooled connection came free: the server is slow or gone
    exc = _driver_error(exc)
    # InternalClientError: a connection the server terminated mid-operation ("cannot switch
    # to state ...").
    if isinstance(
        exc,
        sqlite3.OperationalError | OSError | asyncpg.InterfaceError | asyncpg.InternalClientError,
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in _OUTAGE_CLASSES
    return False


def make(settings: settings_mod.CentralSettings) -> database.Database:
    """A store for central's own use, not yet opened."""
    if settings.database_url:
        return database.Database.postgres(settings.database_url)
    return database.Database.sqlite(settings.db_path)
