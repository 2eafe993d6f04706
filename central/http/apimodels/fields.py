"""Field types shared by the API's models: the strict rules for query strings (ASCII digits
with the length checked first, RFC 3339 times, the protocol's name pattern), body values,
and times that the API prints as RFC 3339 but the code keeps as unix ms.

A validator that refuses a value raises `problem(...)` (a predicate the field's name is put
before, "must be ...") or `message(...)` (a whole sentence): `parse` turns either into the
one error format with the field named."""

from __future__ import annotations

import abc
import dataclasses
import datetime
import typing

import pydantic
import pydantic_core

from central.core import params
from central.domain import timetable
from edge_agent.protocol import names

PROBLEM = "roomproof_problem"  # "{field} " + the message
MESSAGE = "roomproof_message"  # the message as it is
NAME_SCHEMA = {"type": "string", "pattern": f"^{names.PATTERN.pattern}$"}
TIME_SCHEMA = {"type": "string", "format": "date-time"}
DATE_SCHEMA = {"type": "string", "format": "date"}
TIME_QUERY_SCHEMA = {"type": "string", "description": "RFC 3339 with a timezone, or unix ms"}
PAGE_AFTER_MAX = 2**62
Schema = dict[str, typing.Any]


def problem(text: str) -> pydantic_core.PydanticCustomError:
    """A refusal worded as a predicate of the field: `"must be a valid name"`."""
    return pydantic_core.PydanticCustomError(PROBLEM, text)


def message(text: str, field: str | None = None) -> pydantic_core.PydanticCustomError:
    """A refusal worded as a whole sentence (it names what it is about); `field` names the
    field when a rule over several fields refuses one of them."""
    return pydantic_core.PydanticCustomError(MESSAGE, text, {"field": field} if field else None)


class Rule(abc.ABC):
    """Annotated metadata: the value is checked by `check` alone (no coercion before it) and
    described by `schema`."""

    @abc.abstractmethod
    def check(self, raw: object) -> typing.Any:
        """The value, or a PydanticCustomError naming what is wrong."""

    @abc.abstractmethod
    def schema(self) -> Schema:
        """The JSON Schema of what `check` accepts."""

    def __get_pydantic_core_schema__(
        self, source: typing.Any, handler: pydantic.GetCoreSchemaHandler
    ) -> pydantic_core.CoreSchema:
        return pydantic_core.core_schema.no_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(
        self, core: pydantic_core.CoreSchema, handler: pydantic.GetJsonSchemaHandler
    ) -> Schema:
        return self.schema()


# -- query strings ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AsciiInt(Rule):
    """low..high as ASCII digits only (no sign, space, `_` or another script's digits), the
    length checked before any conversion."""

    low: int
    high: int

    def check(self, raw: object) -> int:
        value = params.ascii_int(raw, self.high) if isinstance(raw, str) else None
        if value is None or value < self.low:
            raise problem(f"must be an integer between {self.low} and {self.high} (ASCII digits)")
        return value

    def schema(self) -> Schema:
        return {"type": "integer", "minimum": self.low, "maximum": self.high}


class QueryTimeRule(Rule):
    def check(self, raw: object) -> int:
        if not isinstance(raw, str):
            raise problem(params.TIME_PROBLEM)
        try:
            return params.parse_time(raw)
        except params.TimeError as exc:
            raise problem(str(exc)) from exc

    def schema(self) -> Schema:
        return dict(TIME_QUERY_SCHEMA)


@dataclasses.dataclass(frozen=True)
class NameRule(Rule):
    """The protocol's name rule (sites, rooms, devices, courses, students)."""

    refusal: str = "is not a valid name"  # a predicate ...
    sentence: str = ""  # ... or a whole sentence

    def check(self, raw: object) -> str:
        if not names.is_valid(raw):
            raise message(self.sentence) if self.sentence else problem(self.refusal)
        return typing.cast(str, raw)

    def schema(self) -> Schema:
        return dict(NAME_SCHEMA)


class QueryDateRule(Rule):
    def check(self, raw: object) -> datetime.date:
        try:
            return timetable.parse_date("date", raw)
        except timetable.TimetableError as exc:
            raise problem(str(exc).removeprefix("date ")) from exc

    def schema(self) -> Schema:
        return dict(DATE_SCHEMA)


@dataclasses.dataclass(frozen=True)
class Choice(Rule):
    """One of `values` (lower-cased first with `fold`), else `text`, a whole sentence."""

    values: tuple[str, ...]
    text: str
    fold: bool = False

    def check(self, raw: object) -> str:
        value = raw.lower() if self.fold and isinstance(raw, str) else raw
        if not isinstance(value, str) or value not in self.values:
            raise message(self.text)
        return value

    def schema(self) -> Schema:
        return {"type": "string", "enum": list(self.values)}


QueryTime = typing.Annotated[int, QueryTimeRule()]
QueryName = typing.Annotated[str, NameRule()]
QueryDate = typing.Annotated[datetime.date, QueryDateRule()]
After = typing.Annotated[int, AsciiInt(0, PAGE_AFTER_MAX)]
PathId = typing.Annotated[int, AsciiInt(0, params.MAX_PATH_ID)]


# -- body values ------------------------------------------------------------------------------
Name = typing.Annotated[str, NameRule("must be a valid name")]


@dataclasses.dataclass(frozen=True)
class Text(Rule):
    """Text up to `limit` characters without control characters (but those in `allow`)."""

    limit: int
    allow: str = "\t\n"

    def check(self, raw: object) -> str:
        if isinstance(raw, str) and any(ord(c) < 32 and c not in self.allow for c in raw):
            raise problem("must not contain control characters")
        if not isinstance(raw, str) or len(raw) > self.limit:
            raise problem(f"must be text up to {self.limit} characters")
        return raw

    def schema(self) -> Schema:
        return {"type": "string", "maxLength": self.limit}


@dataclasses.dataclass(frozen=True)
class BodyDate(Rule):
    """A calendar date YYYY-MM-DD, refused in the timetable's own words."""

    field: str

    def check(self, raw: object) -> datetime.date:
        try:
            return timetable.parse_date(self.field, raw)
        except timetable.TimetableError as exc:
            raise message(str(exc)) from exc

    def schema(self) -> Schema:
        return dict(DATE_SCHEMA)


@dataclasses.dataclass(frozen=True)
class BodyTime(Rule):
    """A local time HH:MM, refused in the timetable's own words."""

    field: str

    def check(self, raw: object) -> datetime.time:
        try:
            return timetable.parse_time(self.field, raw)
        except timetable.TimetableError as exc:
            raise message(str(exc)) from exc

    def schema(self) -> Schema:
        return {"type": "string", "description": "local time HH:MM"}


# -- responses --------------------------------------------------------------------------------
Time = typing.Annotated[
    int,
    pydantic.PlainSerializer(params.iso, return_type=str),
    pydantic.WithJsonSchema(TIME_SCHEMA, mode="serialization"),
]
"""Unix ms in the code, RFC 3339 (UTC, milliseconds) on the wire."""
