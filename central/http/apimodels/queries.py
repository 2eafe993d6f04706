"""Query-parameter sets and path parameters of the API, one model per operation's set.
Unknown query parameters are ignored (as proxies and caches add their own); a known one
that breaks its rule is a 400 naming it."""

from __future__ import annotations

import datetime
import typing

import pydantic

from central.http import csvimport
from central.http.apimodels import fields

ALERT_KINDS = ("displaced", "offline", "clock", "gap", "fork")
KIND_TEXT = f"kind must be one of {sorted(ALERT_KINDS)}"
TRUTH = ("true", "false", "1", "0", "yes", "no")
Limit100 = typing.Annotated[int, fields.AsciiInt(1, 1000)]
SESSION_ID_MAX = 2**62


class Query(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Site(Query):
    site: fields.QueryName | None = None


class Page(Query):
    limit: Limit100 = 100
    after: fields.After = pydantic.Field(0, description="page after this id")


class SitePage(Site, Page):
    """A page of one site's records."""


class Checkins(Site):
    room: fields.QueryName | None = None
    since: fields.QueryTime | None = None
    limit: typing.Annotated[int, fields.AsciiInt(1, 10000)] = 1000
    after: fields.After = pydantic.Field(0, description="page after this id")
    student: fields.QueryName | None = None


class Proofs(Site):
    device: fields.QueryName
    limit: Limit100 = 100


class Alerts(Site):
    open: typing.Annotated[str, fields.Choice(TRUTH, "open must be true or false", True)] = "false"
    limit: Limit100 = 100
    after: fields.After = pydantic.Field(0, description="page after this id")
    kind: typing.Annotated[str, fields.Choice(ALERT_KINDS, KIND_TEXT)] | None = None

    @property
    def open_only(self) -> bool:
        return self.open in ("1", "true", "yes")


class ChainEvents(Site, Page):
    device: fields.QueryName | None = None


class Sessions(Site, Page):
    course: fields.QueryName | None = None
    room: fields.QueryName | None = None


class Span(Query):
    from_: fields.QueryTime | None = pydantic.Field(None, alias="from")
    to: fields.QueryTime | None = None


class StudentAttendance(Span):
    limit: Limit100 = 100
    offset: typing.Annotated[int, fields.AsciiInt(0, 10**6)] = 0


class OccurrenceDate(Query):
    date: fields.QueryDate | None = None


class Import(Query):
    dry_run: typing.Annotated[
        str, fields.Choice(("true", "false"), "dry_run must be true or false")
    ] = "false"


class Export(Query):
    """One session occurrence (session_id, date), a course (site, course) or a student (site,
    student_id); the handler checks the combination before the values."""

    session_id: typing.Annotated[int, fields.AsciiInt(1, SESSION_ID_MAX)] | None = None
    date: fields.QueryDate | None = None
    site: fields.QueryName | None = None
    course: fields.QueryName | None = None
    student_id: fields.QueryName | None = None


# -- path parameters (documented; names that break the rule answer 404, as unknown ones) ---
class Path(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)


class SiteRoom(Path):
    site: fields.QueryName
    room: fields.QueryName


class SiteDevice(Path):
    site: fields.QueryName
    device: fields.QueryName


class SiteCourse(Path):
    site: fields.QueryName
    course: fields.QueryName


class SiteStudent(Path):
    site: fields.QueryName
    student: fields.QueryName


class Id(Path):
    """A numeric id in the path: a 400 when it is not one (ASCII digits, 0..10^18-1)."""

    id: fields.PathId


class TokenId(Path):
    id: str


class StatusPath(Id):
    date: typing.Annotated[datetime.date, pydantic.WithJsonSchema(fields.DATE_SCHEMA)]
    student: fields.QueryName


class ImportKind(Path):
    kind: typing.Annotated[
        str, pydantic.WithJsonSchema({"type": "string", "enum": list(csvimport.KINDS)})
    ]
