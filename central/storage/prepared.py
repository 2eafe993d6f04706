"""The hot path: a Core statement compiled once per dialect and run on the DBAPI cursor.

SQLAlchemy spends some 50 us per execution building and caching a statement's key, its
execution context and its result; the ingest and check-in paths run a handful of queries each,
so that alone would add about half of their CPU time (docs/performance.md). A `Prepared`
statement is still written once, in Core, for both dialects; it keeps SQLAlchemy's own type
processing (bind and result processors of each column's type), and skips the rest. Use it
only for queries on those paths; everything else goes through `Connection.execute`.
"""

from __future__ import annotations

import dataclasses
import typing

import sqlalchemy as sa

_Processor = typing.Callable[[typing.Any], typing.Any] | None


@dataclasses.dataclass
class _Compiled:
    sql: str
    # name, processor and fixed value (a LIMIT's), in the order of the SQL's placeholders
    binds: tuple[tuple[str, _Processor, typing.Any], ...]
    types: tuple[tuple[str, sa.types.TypeEngine[typing.Any]], ...]  # the result's, in order
    # the result's processors, from the first result's column type codes (as SQLAlchemy does)
    columns: tuple[tuple[str, _Processor], ...] | None = None


class Prepared:
    def __init__(self, statement: sa.Select[typing.Any] | sa.Insert | sa.Update) -> None:
        self.statement = statement
        self._by_dialect: dict[str, _Compiled] = {}

    def _compiled(self, dialect: sa.Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is not None:
            return found
        compiled = self.statement.compile(dialect=dialect)
        if compiled.positiontup is None:
            raise TypeError(f"{dialect.name}: a positional paramstyle is needed")
        binds = tuple(
            (
                name,
                compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect),
                compiled.binds[name].effective_value,
            )
            for name in compiled.positiontup
        )
        selected = (
            self.statement.selected_columns
            if isinstance(self.statement, sa.Select)
            else self.statement.exported_columns
        )
        types = tuple((str(column.key), column.type.dialect_impl(dialect)) for column in selected)
        found = _Compiled(str(compiled), binds, types)
        self._by_dialect[dialect.name] = found
        return found

    def _run(
        self, conn: sa.Connection, params: typing.Mapping[str, typing.Any]
    ) -> tuple[typing.Any, _Compiled]:
        compiled = self._compiled(conn.dialect)
        given = [params[name] if name in params else fixed for name, _, fixed in compiled.binds]
        values = tuple(
            process(value) if process is not None else value
            for (_, process, _), value in zip(compiled.binds, given, strict=True)
        )
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(compiled.sql, values)
        except conn.dialect.loaded_dbapi.IntegrityError as exc:
            raise sa.exc.IntegrityError(compiled.sql, values, exc) from exc
        return cursor, compiled

    def rows(self, conn: sa.Connection, **params: typing.Any) -> list[dict[str, typing.Any]]:
        """The rows, each a dict by column name, values processed as SQLAlchemy would."""
        cursor, compiled = self._run(conn, params)
        try:
            found = cursor.fetchall()
            if compiled.columns is None:
                dialect = conn.dialect
                compiled.columns = tuple(
                    (name, kind.result_processor(dialect, described[1]))
                    for (name, kind), described in zip(
                        compiled.types, cursor.description, strict=True
                    )
                )
        finally:
            cursor.close()
        assert compiled.columns is not None
        return [
            {
                name: process(value) if process is not None else value
                for (name, process), value in zip(compiled.columns, row, strict=True)
            }
            for row in found
        ]

    def first(self, conn: sa.Connection, **params: typing.Any) -> dict[str, typing.Any] | None:
        found = self.rows(conn, **params)
        return found[0] if found else None

    def changed(self, conn: sa.Connection, **params: typing.Any) -> int:
        """Runs a write; the rows it changed."""
        cursor, _ = self._run(conn, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()
