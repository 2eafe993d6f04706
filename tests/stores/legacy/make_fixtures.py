"""Makes the fixtures of test_upgrade.py from a commit of the old stores (default: main at
5d744fc, the last before Alembic), reproducibly:

    .venv/bin/python -m tests.stores.legacy.make_fixtures [--commit 5d744fc]

It extracts that commit's `central/` and `edge_agent/` into a temporary directory, runs
data.py's `populate` and `reads` there through that commit's own SqliteStore and PgStore
(PostgreSQL: the test server, a scratch database), and writes here:
main-sqlite.sql (the SQLite file's `.dump`), main-postgres.sql (`pg_dump --inserts`), and
main-reads-sqlite.json / main-reads-postgres.json (what that commit's Store API read back).
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SERVER = "postgresql://postgres@127.0.0.1:5432"

# Run under the old commit's code (sys.path[0] is its tree): populate, then read back.
RUN = """
import asyncio, json, sys
from central import sqlite_store, pg_store
import data
async def main(kind, where, out):
    db = sqlite_store.SqliteStore(__import__('pathlib').Path(where)) if kind == 'sqlite' \\
        else pg_store.PgStore(where)
    await db.open()
    try:
        await data.populate(db)
        found = await data.reads(db)
    finally:
        await db.close()
    with open(out, 'w') as f:
        json.dump(found, f, indent=1, sort_keys=True)
        f.write('\\n')
asyncio.run(main(*sys.argv[1:]))
"""


def _old_tree(commit: str, into: pathlib.Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "central", "edge_agent"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    shutil.copy(HERE / "data.py", into / "data.py")
    (into / "run.py").write_text(RUN)


def _run_old(tree: pathlib.Path, *args: str) -> None:
    subprocess.run([sys.executable, "run.py", *args], cwd=tree, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commit", default="5d744fc")
    commit = parser.parse_args().commit
    with tempfile.TemporaryDirectory(prefix="roomproof-legacy-") as tmp:
        tree = pathlib.Path(tmp)
        _old_tree(commit, tree)
        path = tree / "central.db"
        _run_old(tree, "sqlite", str(path), str(HERE / "main-reads-sqlite.json"))
        with sqlite3.connect(path) as db:
            (HERE / "main-sqlite.sql").write_text("\n".join(db.iterdump()) + "\n")
        name = f"roomproof_fixture_{uuid.uuid4().hex}"
        subprocess.run(["psql", "-q", f"{SERVER}/postgres", "-c", f'CREATE DATABASE "{name}"'])
        try:
            dsn = f"{SERVER}/{name}"
            _run_old(tree, "postgres", dsn, str(HERE / "main-reads-postgres.json"))
            dump = subprocess.run(
                ["pg_dump", "--inserts", "--no-owner", "--no-privileges", dsn],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            (HERE / "main-postgres.sql").write_text(dump)
        finally:
            subprocess.run(
                ["psql", "-q", f"{SERVER}/postgres", "-c", f'DROP DATABASE "{name}" WITH (FORCE)']
            )


if __name__ == "__main__":
    main()
