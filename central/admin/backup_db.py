"""Consistent snapshots of central's database while it runs, and restores into an empty one.

Only the configured database file or URL and the engines' own tools are used (SQLite's online
backup API; `pg_dump`/`pg_restore` in custom format under an exported snapshot), never the
store's code, so a backup made by one version of the store restores under the next. Tables are
found and counted generically (sqlite_master, information_schema).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import shutil
import sqlite3
import urllib.parse

import asyncpg

from edge_agent import keystore

# Query parameters libpq understands in a URI; others (server settings that asyncpg passes
# on, e.g. synchronous_commit) would make pg_dump refuse the URI, and do not matter to it.
_LIBPQ_PARAMS = frozenset(
    {
        "application_name",
        "connect_timeout",
        "gssencmode",
        "host",
        "hostaddr",
        "keepalives",
        "options",
        "passfile",
        "port",
        "sslcert",
        "sslcrl",
        "sslkey",
        "sslmode",
        "sslrootcert",
        "target_session_attrs",
        "user",
    }
)


class DatabaseError(Exception):
    """The database cannot be backed up or restored into; the message says why."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# SQLite ---------------------------------------------------------------------------------


def sqlite_snapshot(source: pathlib.Path, target: pathlib.Path) -> dict[str, int]:
    """Copies the live database with SQLite's backup API in one step (one read transaction:
    central's writers go on, in WAL mode, and the copy is of one moment); returns its tables'
    row counts, read from the copy."""
    if not source.is_file():
        raise DatabaseError(f"no database at {source} (is data_dir right?)")
    keystore.private_sqlite(target)
    try:
        # Read-write like central's own handle: a read-only one cannot open a WAL database
        # whose -shm is gone (central stopped), and reads are all this one does.
        src = sqlite3.connect(source, timeout=30)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)  # pages=-1: all at once, never restarted by a writer
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise DatabaseError(f"{source}: {exc}") from exc
    return sqlite_counts(target)


def sqlite_counts(path: pathlib.Path) -> dict[str, int]:
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            ).fetchall()
            return {
                name: int(db.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0])
                for (name,) in rows
            }
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise DatabaseError(f"{path}: {exc}") from exc


def sqlite_check(path: pathlib.Path) -> None:
    """An extracted snapshot must be a sound database before it replaces anything."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            result = db.execute("PRAGMA integrity_check").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise DatabaseError(f"the backup's database: {exc}") from exc
    if result != ("ok",):
        raise DatabaseError(f"the backup's database fails its integrity check: {result}")


# PostgreSQL -----------------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise DatabaseError(
            f"{name} not found: install the PostgreSQL client tools"
            f" (Debian: apt-get install postgresql-client) of the server's major version"
        )
    return found


def describe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"postgresql://{user}{host}{port}{parts.path}"


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """A URI for pg_dump/pg_restore without the password (it goes in PGPASSWORD, not on a
    command line that `ps` shows) and without asyncpg-only parameters."""
    parts = urllib.parse.urlsplit(url)
    env: dict[str, str] = {}
    netloc = parts.netloc
    if parts.password is not None:
        env["PGPASSWORD"] = urllib.parse.unquote(parts.password)
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}@{hostport}"
    query = urllib.parse.urlencode(
        [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k in _LIBPQ_PARAMS]
    )
    return urllib.parse.urlunsplit(("postgresql", netloc, parts.path, query, "")), env


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to {describe(url)}: {exc}") from exc


_TABLES = """
SELECT table_schema, table_name FROM information_schema.tables
WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')
ORDER BY table_schema, table_name
"""


async def _pg_counts(conn: asyncpg.Connection) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in await conn.fetch(_TABLES):
        schema, table = row["table_schema"], row["table_name"]
        name = table if schema == "public" else f"{schema}.{table}"
        value = await conn.fetchval(f"SELECT count(*) FROM {_quote(schema)}.{_quote(table)}")
        counts[name] = int(value)
    return counts


async def pg_snapshot(url: str, target: pathlib.Path) -> dict[str, int]:
    """`pg_dump --format=custom` of the database under a snapshot exported from a repeatable
    read transaction, whose row counts are taken in that same snapshot (so they match the
    dump exactly while central keeps writing)."""
    pg_dump = _tool("pg_dump")
    uri, env = libpq_target(url)
    conn = await _connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            counts = await _pg_counts(conn)
            process = await asyncio.create_subprocess_exec(
                pg_dump,
                "--format=custom",
                f"--snapshot={snapshot}",
                f"--file={target}",
                f"--dbname={uri}",
                env={**os.environ, **env},
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await process.communicate()
            if process.returncode != 0:
                raise DatabaseError(f"pg_dump failed: {err.decode(errors='replace').strip()}")
    finally:
        await conn.close()
    os.chmod(target, 0o600)
    return counts


async def pg_require_empty(url: str) -> None:
    conn = await _connect(url)
    try:
        tables = await conn.fetch(_TABLES)
    finally:
        await conn.close()
    if tables:
        raise DatabaseError(
            f"database {describe(url)} is not empty ({len(tables)} tables):"
            " restore only into a new, empty database"
        )


async def pg_restore(url: str, dump: pathlib.Path) -> dict[str, int]:
    """`pg_restore` in one transaction (all or nothing); returns the restored row counts."""
    tool = _tool("pg_restore")
    uri, env = libpq_target(url)
    process = await asyncio.create_subprocess_exec(
        tool,
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        f"--dbname={uri}",
        str(dump),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise DatabaseError(f"pg_restore failed: {err.decode(errors='replace').strip()}")
    conn = await _connect(url)
    try:
        return await _pg_counts(conn)
    finally:
        with contextlib.suppress(OSError):
            await conn.close()
