"""Which store central runs on: PostgreSQL when `database_url` is set (several central
processes share it), else the SQLite file in data_dir (one process per site)."""

from __future__ import annotations

from central import pg_store
from central import settings as settings_mod
from central import sqlite_store
from central import store


def make(settings: settings_mod.CentralSettings) -> store.Store:
    """A store for central's own use, not yet opened."""
    if settings.database_url:
        return pg_store.PgStore(settings.database_url)
    return sqlite_store.SqliteStore(settings.db_path)
