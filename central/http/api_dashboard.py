"""The admin dashboard (a static page of plain ES modules: no build step, no CDN) and the
per-course history its charts need; the dashboard reads everything else from the JSON API."""

from __future__ import annotations

import importlib.resources

from aiohttp import web

from central.checkin import attendance
from central.core import clock as clock_mod
from central.core import errors
from central.domain import timetable
from central.http import auth
from central.http.apimodels import parse
from central.http.apimodels import queries
from central.http.apimodels import responses
from central.http.apimodels import spec
from central.storage import database
from edge_agent.protocol import names

HISTORY_DAYS = 120
MAX_SPAN_DAYS = 400
# Files under /static/ this module serves, with their content types.
STATIC = {
    "dashboard.js": "text/javascript",
    "dashboard-api.js": "text/javascript",
    "dashboard-charts.js": "text/javascript",
    "dashboard.css": "text/css",
    "checkin.js": "text/javascript",
}
ATTENDED = ("present", "late", "flagged")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self' data: blob:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _read(name: str) -> bytes:
    return importlib.resources.files("central.http.pages").joinpath(name).read_bytes()


def rate(summary: dict[str, int]) -> float | None:
    """Attended (present, late, flagged) over those who were due (not pending or excused)."""
    due = sum(summary.values()) - summary.get("pending", 0) - summary.get("excused", 0)
    if due <= 0:
        return None
    return round(sum(summary.get(s, 0) for s in ATTENDED) / due, 4)


class DashboardApi:
    def __init__(self, db: database.Database, clock: clock_mod.Clock) -> None:
        self.db = db
        self.clock = clock
        self.page = _read("dashboard.html")
        self.files = {name: _read(name) for name in STATIC}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/dashboard", self.dashboard)
        for name in STATIC:
            app.router.add_get(f"/static/{name}", self.static)
        app.router.add_get("/api/v1/courses/{site}/{course}/history", self.course_history)

    async def dashboard(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.page,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": CSP,
                "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def static(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[-1]
        return web.Response(
            body=self.files[name],
            content_type=STATIC[name],
            charset="utf-8",
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    @spec.operation(
        "GET",
        "/api/v1/courses/{site}/{course}/history",
        "Every occurrence of the course's sessions in from..to with status counts,"
        " attendance rate and late count",
        responses.CourseHistory,
        path_params=queries.SiteCourse,
        query=queries.Span,
    )
    async def course_history(self, request: web.Request) -> web.Response:
        """Every occurrence of the course's sessions that started in from..to (default: the
        last 120 days), oldest first, with status counts, the attendance rate and late count."""
        await auth.require(request, self.db)
        site, name = request.match_info["site"], request.match_info["course"]
        course = None
        if names.is_valid(site) and names.is_valid(name) and auth.sees_site(request, site):
            course = await self.db.get_course(site, name)
        if course is None:
            raise errors.ApiError(404, "not_found", "no such course")
        auth.require_course(request, site, name)
        now = self.clock.now_ms()
        span = parse.query(request, queries.Span)
        start = span.from_ or now - HISTORY_DAYS * 86400_000
        end = min(span.to or now, now + 1)
        if end <= start or end - start > MAX_SPAN_DAYS * 86400_000:
            raise errors.ApiError(
                400, "invalid_request", f"from..to must span 1 ms to {MAX_SPAN_DAYS} days"
            )
        rows: list[tuple[int, responses.HistoryRow]] = []
        sessions = await self.db.list_sessions(site, name, None, 10_000, 0)
        for session in sessions:
            for occurrence in timetable.between(session, start, end):
                summary = attendance.summary(await attendance.report(self.db, occurrence, now))
                row = responses.HistoryRow(
                    session_id=session.id,
                    room=session.room,
                    date=occurrence.key,
                    starts_at=occurrence.start_ms,
                    ended=now >= occurrence.end_ms,
                    summary=summary,
                    rate=rate(summary),
                    late=summary.get("late", 0),
                )
                rows.append((occurrence.start_ms, row))
        rows.sort(key=lambda item: (item[0], item[1].session_id))
        return parse.respond(
            responses.CourseHistory(site=site, course=name, occurrences=[r for _, r in rows])
        )
