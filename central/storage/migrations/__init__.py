"""Alembic migrations: one history for SQLite and PostgreSQL, run at every open.

Revision 0001 (the baseline) is the schema of the two stores before Alembic: it runs the
frozen legacy scripts to their end, so it creates a new database and also finishes one made
by an older central (which has their `schema_version` table instead of `alembic_version`).
Every later revision is an ordinary Alembic revision in versions/.
"""

from __future__ import annotations

import logging
import pathlib

import sqlalchemy as sa
from alembic import command
from alembic import config as alembic_config
from alembic import script as alembic_script
from alembic.runtime import migration

HERE = pathlib.Path(__file__).resolve().parent
log = logging.getLogger(__name__)
# Alembic narrates every run at INFO ("Context impl ...") on every start; central logs the
# upgrades it makes itself, below.
logging.getLogger("alembic").setLevel(logging.WARNING)


def configuration(conn: sa.Connection | None = None) -> alembic_config.Config:
    """Alembic's configuration, without an ini file; env.py migrates `conn`."""
    config = alembic_config.Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = conn
    return config


def head() -> str:
    found = alembic_script.ScriptDirectory.from_config(configuration()).get_current_head()
    assert found is not None
    return found


def current(conn: sa.Connection) -> str | None:
    return migration.MigrationContext.configure(conn).get_current_revision()


def upgrade(conn: sa.Connection) -> None:
    """Brings the database to the head revision, inside the caller's transaction. Raises
    RuntimeError for a database a newer central has migrated."""
    config = configuration(conn)
    revisions = alembic_script.ScriptDirectory.from_config(config)
    recorded = current(conn)
    if recorded is not None and recorded not in {r.revision for r in revisions.walk_revisions()}:
        newest = revisions.get_current_head()
        raise RuntimeError(f"database schema {recorded} is newer than this central ({newest})")
    newest = revisions.get_current_head()
    if recorded == newest:
        return
    command.upgrade(config, "head")
    log.info("database schema upgraded from %s to %s", recorded or "the old stores'", newest)
