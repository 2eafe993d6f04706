"""Where the two databases differ in how queries run: connections, transactions, durability.

A query is a function of a `sqlalchemy.Connection` (queries.py); an engine runs it in one
transaction and maps a refused write (`IntegrityError`) to `store.Conflict`. Every other
database failure propagates as SQLAlchemy raised it; `central.storage.stores.is_outage` tells an
outage from a bug.

- SQLite: one connection, on one thread of its own, running SQLAlchemy's synchronous
  pysqlite engine: a query, and a whole group commit, is one hop to that thread. (SQLAlchemy's
  aiosqlite engine makes one hop per statement, and a batch of proofs in one hop needs
  aiosqlite's private API.) WAL with synchronous=FULL: a commit is on disk before the 201
  or the PUBACK that follows it. The file and its -wal/-shm are 0600.
- PostgreSQL: SQLAlchemy's asyncio engine on asyncpg, a pool shared by the tasks; reads run
  in autocommit, writes in a transaction each. Several centrals may share the database:
  migrations take an advisory lock, and a server with synchronous_commit=off is refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import pathlib
import re
import sqlite3
import typing

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext import asyncio as sa_asyncio

from central.storage import migrations
from central.storage import store
from edge_agent import keystore

_P = typing.ParamSpec("_P")
_R = typing.TypeVar("_R")
Query = typing.Callable[typing.Concatenate[sa.Connection, _P], _R]

WRITE_BATCH = 256
POOL_MAX = 10
# pg_advisory_xact_lock key held while migrating ("roomprof" in ASCII), so that centrals
# starting together migrate one after the other.
MIGRATION_LOCK = 0x726F6F6D70726F66


class Engine(typing.Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def read(self, query: Query[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Runs a query that only reads."""
        ...

    async def write(self, query: Query[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Runs a query in a transaction of its own; Conflict when a constraint refuses it."""
        ...

    async def batched(self, query: Query[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Like `write`, for the hot writes (proofs, check-ins): an engine may commit several
        in one transaction, each still returning only once its write is committed."""
        ...


def conflict(exc: sa.exc.IntegrityError) -> store.Conflict:
    """The driver's message only: the statement and its values stay out of API answers."""
    return store.Conflict(str(exc.orig))


_Pending = tuple[
    typing.Callable[..., typing.Any], tuple[typing.Any, ...], asyncio.Future[typing.Any]
]


class Sqlite:
    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._conn: sa.Connection | None = None
        self._batch: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def _call(self, function: typing.Callable[[], _R]) -> _R:
        if self._thread is None:
            raise RuntimeError("store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, function)

    @property
    def conn(self) -> sa.Connection:
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    async def open(self) -> None:
        keystore.private_sqlite(self.path)  # 0600 with its -wal/-shm, whatever the dir's mode
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        try:
            await self._call(self._connect)
        except BaseException:
            await self.close()
            raise

    def _connect(self) -> None:
        path = self.path

        def connect() -> sqlite3.Connection:
            # pysqlite's own transactions: a write begins one, a read needs none (one thread
            # does every write of this process). A batch and a migration BEGIN explicitly.
            raw = sqlite3.connect(path, check_same_thread=False)
            raw.execute("PRAGMA journal_mode=WAL")
            # FULL: each commit (a group commit of check-ins and proofs) is fsynced before the
            # 201 or the PUBACK goes out; NORMAL survives a SIGKILL, not a power cut.
            raw.execute("PRAGMA synchronous=FULL")
            raw.execute("PRAGMA foreign_keys=ON")
            raw.execute("PRAGMA busy_timeout=5000")
            return raw

        engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.StaticPool)
        self._conn = engine.connect()
        with self._conn.begin():
            self._conn.exec_driver_sql("BEGIN")  # the whole migration, or none of it
            migrations.upgrade(self._conn)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        if self._thread is None:
            return
        if self._conn is not None:
            await self._call(self._disconnect)
        self._thread.shutdown(wait=True)
        self._thread = None

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            conn.engine.dispose()

    def _transaction(self, query: Query[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        conn = self.conn
        try:
            with conn.begin():
                return query(conn, *args, **kwargs)
        except sa.exc.IntegrityError as exc:
            raise conflict(exc) from exc

    def _read(self, query: Query[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """pysqlite begins no transaction for a SELECT; SQLAlchemy's own bookkeeping of one
        (when the query goes through Connection.execute) is closed right after."""
        conn = self.conn
        try:
            return query(conn, *args, **kwargs)
        finally:
            if conn.in_transaction():
                conn.rollback()

    async def read(self, query: Query[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return await self._call(functools.partial(self._read, query, *args, **kwargs))

    async def write(self, query: Query[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return await self._call(functools.partial(self._transaction, query, *args, **kwargs))

    async def batched(self, query: Query[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Group commit: every write that arrived while the store was busy shares one
        transaction and one hop to the thread, each in a savepoint of its own. A burst costs a
        few commits, not one per message; a caller returns only once its write is committed
        (a PUBACK or a 201 never precedes durability)."""
        future: asyncio.Future[_R] = asyncio.get_running_loop().create_future()
        self._batch.append((functools.partial(query, **kwargs), args, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._batch:
            batch = self._batch[:WRITE_BATCH]
            del self._batch[:WRITE_BATCH]
            try:
                outcomes = await self._call(functools.partial(self._run_batch, batch))
            except Exception as exc:  # the transaction itself failed (disk, I/O)
                outcomes = [exc] * len(batch)
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # the caller went away; its write stands
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _run_batch(self, batch: list[_Pending]) -> list[typing.Any]:
        """In the thread: a write's own failure (a duplicate, a refused credential) ends only
        that write; a failure of the database fails the batch."""
        conn = self.conn
        # The savepoints go straight to the driver: SQLAlchemy's own execution costs more
        # than the statements themselves, three times per write.
        raw = conn.connection.driver_connection
        assert raw is not None
        outcomes: list[typing.Any] = []
        with conn.begin():
            raw.execute("BEGIN")  # one transaction for the batch, one fsync
            for query, args, _ in batch:
                raw.execute("SAVEPOINT write")
                try:
                    outcomes.append(query(conn, *args))
                except sa.exc.IntegrityError as exc:
                    raw.execute("ROLLBACK TO write")
                    outcomes.append(conflict(exc))
                except (sa.exc.DBAPIError, sqlite3.Error):
                    raise
                except Exception as exc:  # CredentialInactive, or a decision that failed
                    raw.execute("ROLLBACK TO write")
                    outcomes.append(exc)
                raw.execute("RELEASE write")
        return outcomes


def redact(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", dsn)


def _closed_is_gone(dbapi_connection: typing.Any, record: typing.Any, proxy: typing.Any) -> None:
    """A pooled connection the server closed (a restart, an outage) is replaced when taken
    out, as asyncpg's own pool does, instead of failing the next query."""
    if dbapi_connection.driver_connection.is_closed():
        raise sa.exc.DisconnectionError("the server closed this connection")


class Postgres:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._engine: sa_asyncio.AsyncEngine | None = None
        self._reader: sa_asyncio.AsyncEngine | None = None

    @property
    def engine(self) -> sa_asyncio.AsyncEngine:
        if self._engine is None:
            raise RuntimeError("store is not open")
        return self._engine

    async def open(self) -> None:
        """Connect and migrate; an unreachable or refusing server is a ConnectionError (an
        OSError, which the CLI reports in one line)."""
        dsn = self.dsn

        async def connect() -> asyncpg.Connection:
            return await asyncpg.connect(dsn)  # the DSN's own options, as asyncpg reads them

        engine = sa_asyncio.create_async_engine(
            "postgresql+asyncpg://", async_creator=connect, pool_size=POOL_MAX, max_overflow=0
        )
        sa.event.listen(engine.sync_engine, "checkout", _closed_is_gone)
        try:
            conn = await engine.connect()
        except (OSError, TimeoutError, asyncpg.PostgresError, sa.exc.DBAPIError) as exc:
            await engine.dispose()
            cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
            raise ConnectionError(f"database {redact(dsn)}: {cause}") from exc
        try:
            async with contextlib.aclosing(conn):
                await self._require_durable_commits(conn)
                async with conn.begin():
                    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                    await conn.run_sync(migrations.upgrade)
        except RuntimeError as exc:
            await engine.dispose()
            raise RuntimeError(f"{redact(dsn)}: {exc}") from exc
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def _require_durable_commits(self, conn: sa_asyncio.AsyncConnection) -> None:
        """A 201 or a PUBACK goes out after the commit: the commit must be on disk by then."""
        setting = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar()
        await conn.rollback()
        if setting == "off":
            raise RuntimeError(
                "synchronous_commit is off, so an answered check-in or proof could be lost in"
                " a crash; turn it on (the server's, the role's or the DSN's)"
            )

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine, self._reader = self._engine, None, None
            await engine.dispose()

    async def read(self, query: Query[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self._reader is None:
            raise RuntimeError("store is not open")
        async with self._reader.connect() as conn:
            return await conn.run_sync(query, *args, **kwargs)

    async def write(self, query: Query[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            async with self.engine.begin() as conn:
                return await conn.run_sync(query, *args, **kwargs)
        except sa.exc.IntegrityError as exc:
            raise conflict(exc) from exc

    async def batched(self, query: Query[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Each its own transaction: the server commits concurrent transactions together."""
        return await self.write(query, *args, **kwargs)
