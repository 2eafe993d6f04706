"""HTTP routes for the CSV import of rosters and timetables and the attendance exports."""

from __future__ import annotations

import json

from aiohttp import web

from central.admin import exports
from central.checkin import checkins
from central.core import clock as clock_mod
from central.core import errors
from central.core import keyring
from central.core import settings as settings_mod
from central.http import audit
from central.http import auth
from central.http import csvimport
from central.http.apimodels import parse
from central.http.apimodels import queries
from central.http.apimodels import responses
from central.http.apimodels import spec
from central.storage import database

IMPORTERS = ("admin",)
EXPORTERS = ("admin", "teacher")  # an export makes verification links, as they may
CSV_TYPES = frozenset({"text/csv", "application/csv", "text/plain"})
SELECTION = (
    "one session occurrence (session_id, date; without date, today's occurrence in the"
    " session's time zone, else the latest past one), a course (site, course) or a student"
    " (site, student_id)"
)


class ReportsApi:
    def __init__(
        self,
        db: database.Database,
        keys: keyring.Keyring,
        settings: settings_mod.CentralSettings,
        service: checkins.CheckinService,
        clock: clock_mod.Clock,
    ) -> None:
        self.db = db
        self.keys = keys
        self.settings = settings
        self.service = service
        self.clock = clock

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/imports/{kind}", self.import_csv)
        app.router.add_get("/api/v1/exports/attendance.csv", self.export_csv)
        app.router.add_get("/api/v1/exports/attendance.pdf", self.export_pdf)

    async def _body(self, request: web.Request) -> bytes:
        """The CSV body, read up to csvimport.MAX_BYTES (beyond the app's JSON body limit)."""
        if request.content_type not in CSV_TYPES:
            raise errors.ApiError(
                415, "unsupported_media_type", "send the file as Content-Type: text/csv"
            )
        limit = csvimport.MAX_BYTES
        if request.content_length is not None and request.content_length > limit:
            raise errors.ApiError(
                413, "payload_too_large", f"the file is larger than {limit} bytes"
            )
        data = bytearray()
        while chunk := await request.content.read(64 * 1024):
            data += chunk
            if len(data) > limit:
                raise errors.ApiError(
                    413, "payload_too_large", f"the file is larger than {limit} bytes"
                )
        return bytes(data)

    @spec.operation(
        "POST",
        "/api/v1/imports/{kind}",
        "Import a CSV of students, courses, enrolments or sessions (all rows or none)",
        responses.ImportResult,
        roles=IMPORTERS,
        path_params=queries.ImportKind,
        query=queries.Import,
        body={"type": "string"},
        body_media="text/csv",
        errors=(409, 415),
        tag="reports",
    )
    async def import_csv(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, IMPORTERS)
        kind = request.match_info["kind"]
        if kind not in csvimport.KINDS:
            raise errors.ApiError(
                404, "not_found", f"no import of {kind[:40]}: one of {', '.join(csvimport.KINDS)}"
            )
        dry = parse.query(request, queries.Import).dry_run
        data = await self._body(request)
        try:
            result = await csvimport.run(
                self.db,
                kind,
                data,
                dry == "true",
                site=auth.site_of(request),
                pin_min_length=self.settings.pin_min_length,
            )
        except csvimport.CsvError as exc:
            raise errors.ApiError(400, "invalid_csv", str(exc)) from exc
        except csvimport.Interrupted as exc:
            raise errors.ApiError(409, "import_interrupted", str(exc)) from exc
        if result.applied:
            self.service.rosters.clear()
            self.service.sessions.clear()
            self.service.forget_credentials()  # a new PIN revoked the student's credentials
        if csvimport.audited(result):
            detail = csvimport.audit_detail(result)
            await audit.api(request, self.db, f"import_{kind}", kind, detail, result.site)
        return parse.respond(responses.ImportResult.model_validate(result.json()))

    def _selection(self, request: web.Request) -> exports.Selection:
        query = request.query
        given = [key for key in ("session_id", "course", "student_id") if key in query]
        if len(given) != 1:
            raise errors.ApiError(
                400,
                "invalid_request",
                "give exactly one of session_id (with date), site with course,"
                " site with student_id",
            )
        if given == ["session_id"] and "site" in query:
            raise errors.ApiError(
                400, "invalid_request", "site goes with course or student_id", {"field": "site"}
            )
        if given != ["session_id"] and "date" in query:
            raise errors.ApiError(
                400, "invalid_request", "date goes with session_id", {"field": "date"}
            )
        if given != ["session_id"] and "site" not in query:
            raise errors.ApiError(400, "invalid_request", "site is required", {"field": "site"})
        chosen = parse.query(request, queries.Export)
        if chosen.session_id is not None:  # without a date: the session's default occurrence
            return exports.Selection(session_id=chosen.session_id, date=chosen.date)
        if chosen.course is not None:
            return exports.Selection(site=chosen.site, course=chosen.course)
        return exports.Selection(site=chosen.site, student_id=chosen.student_id)

    async def _export(self, request: web.Request) -> tuple[exports.Export, int]:
        await auth.require(request, self.db, EXPORTERS)
        selection = self._selection(request)
        now = self.clock.now_ms()
        try:
            export = await exports.collect(
                self.db,
                self.keys,
                self.settings.public_base,
                selection,
                now,
                self.settings.verify_link_ttl_days,
                lambda site, course: auth.sees_course(request, site, course),
                auth.site_of(request),
            )
        except exports.NotFound as exc:
            raise errors.ApiError(404, "not_found", str(exc), exc.details) from exc
        except exports.Forbidden as exc:
            raise errors.ApiError(403, "not_your_course", str(exc)) from exc
        detail = json.dumps(
            {"selection": selection.title(), "lines": len(export.lines), "links": export.links}
        )
        await audit.api(
            request, self.db, "attendance_export", selection.filename("*"), detail, selection.site
        )
        return export, now

    @spec.operation(
        "GET",
        "/api/v1/exports/attendance.csv",
        "Attendance as CSV with verification links: " + SELECTION,
        {"type": "string"},
        roles=EXPORTERS,
        query=queries.Export,
        media="text/csv",
        errors=(404,),
        tag="reports",
    )
    async def export_csv(self, request: web.Request) -> web.Response:
        export, _ = await self._export(request)
        return self._file(exports.to_csv(export), "text/csv", export.selection.filename("csv"))

    @spec.operation(
        "GET",
        "/api/v1/exports/attendance.pdf",
        "Attendance as PDF with verification links: " + SELECTION,
        {"type": "string", "format": "binary"},
        roles=EXPORTERS,
        query=queries.Export,
        media="application/pdf",
        errors=(404,),
        tag="reports",
    )
    async def export_pdf(self, request: web.Request) -> web.Response:
        export, now = await self._export(request)
        data = await exports.to_pdf(export, now)
        return self._file(data, "application/pdf", export.selection.filename("pdf"))

    def _file(self, data: bytes, content_type: str, filename: str) -> web.Response:
        return web.Response(
            body=data,
            content_type=content_type,
            charset="utf-8" if content_type == "text/csv" else None,
            headers={
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )
