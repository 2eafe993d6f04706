"""Baseline: the schema of the stores before Alembic (SQLite version 9, PostgreSQL version 6).

On an empty database it creates that schema; on a database an older central made it runs
that central's remaining numbered migrations and drops its `schema_version` table."""

from __future__ import annotations

import alembic.util
from alembic import op

from central.storage import legacy

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    legacy.upgrade(op.get_bind())


def downgrade() -> None:
    raise alembic.util.CommandError("the baseline is where the history starts")
