"""The few SQL spellings SQLite and PostgreSQL do not share, each a construct the queries use
like any other; everything else in the queries is plain SQLAlchemy Core."""

from __future__ import annotations

import re
import typing

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext import compiler as ext_compiler
from sqlalchemy.sql import compiler as sql_compiler
from sqlalchemy.sql import visitors


def insert(conn: sa.Connection, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
    """INSERT with ON CONFLICT: both dialects spell it alike, through different classes."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def lock_browser(conn: sa.Connection, browser: str) -> None:
    """PostgreSQL: check-ins from one browser take turns (several centrals share the
    database), so each counts the ones before it. SQLite has one writer already."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(browser))))


def _quoted(key: str) -> str:
    """A key of our own code as an SQL string literal (keys are names, never user input)."""
    if not re.fullmatch(r"[$.a-z_]+", key):
        raise ValueError(f"not a JSON key name: {key!r}")
    return f"'{key}'"


class json_has_key(sa.sql.expression.ColumnElement[bool]):
    """True when the JSON object in `column` has the key."""

    inherit_cache = True
    type = sa.Boolean()
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy's own attribute
        ("column", visitors.InternalTraversal.dp_clauseelement),
        ("name", visitors.InternalTraversal.dp_string),
    ]

    def __init__(self, column: sa.ColumnElement[typing.Any], name: str) -> None:
        self.column = column
        self.name = name


class json_without(sa.sql.expression.ColumnElement[typing.Any]):
    """The JSON object in `column` without the keys."""

    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 - SQLAlchemy's own attribute
        ("column", visitors.InternalTraversal.dp_clauseelement),
        ("keys", visitors.InternalTraversal.dp_string_list),
    ]

    def __init__(self, column: sa.ColumnElement[typing.Any], *keys: str) -> None:
        self.column = column
        self.keys = keys
        self.type = column.type


@ext_compiler.compiles(json_has_key, "sqlite")
def _has_key_sqlite(
    element: json_has_key, compiler: sql_compiler.SQLCompiler, **kw: typing.Any
) -> str:
    path = _quoted(f"$.{element.name}")
    return f"(json_extract({compiler.process(element.column, **kw)}, {path}) IS NOT NULL)"


@ext_compiler.compiles(json_has_key, "postgresql")
def _has_key_pg(element: json_has_key, compiler: sql_compiler.SQLCompiler, **kw: typing.Any) -> str:
    key = _quoted(element.name)
    return f"(({compiler.process(element.column, **kw)})::jsonb ? {key})"


@ext_compiler.compiles(json_without, "sqlite")
def _without_sqlite(
    element: json_without, compiler: sql_compiler.SQLCompiler, **kw: typing.Any
) -> str:
    paths = ", ".join(_quoted(f"$.{key}") for key in element.keys)
    return f"json_remove({compiler.process(element.column, **kw)}, {paths})"


@ext_compiler.compiles(json_without, "postgresql")
def _without_pg(element: json_without, compiler: sql_compiler.SQLCompiler, **kw: typing.Any) -> str:
    expression = f"({compiler.process(element.column, **kw)})::jsonb"
    for key in element.keys:
        expression = f"({expression} - {_quoted(key)})"
    return f"{expression}::json"
