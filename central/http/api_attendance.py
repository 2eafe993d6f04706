"""HTTP routes for courses, rosters, timetable sessions, attendance and venue check-out."""

from __future__ import annotations

import datetime
import json
import typing

from aiohttp import web

from central.admin import privacy
from central.checkin import attendance
from central.checkin import checkins
from central.core import clock as clock_mod
from central.core import errors
from central.core import events
from central.domain import netaddr
from central.domain import timetable
from central.http import audit
from central.http import auth
from central.http import clientip
from central.http import csrf
from central.http.apimodels import bodies
from central.http.apimodels import parse
from central.http.apimodels import queries
from central.http.apimodels import responses
from central.http.apimodels import spec
from central.storage import database
from central.storage import store
from edge_agent.protocol import names

WRITERS = ("admin",)
TEACHERS = ("admin", "teacher")
STUDENT_COOKIE = "roomproof_student"
MAX_ROSTER = bodies.MAX_ROSTER
HISTORY_DAYS = 120


def session_json(session: timetable.Session) -> dict[str, typing.Any]:
    return parse.plain(responses.Session.of(session))


def occurrence_json(occurrence: timetable.Occurrence) -> dict[str, typing.Any]:
    """An occurrence as the API, the event stream and the webhooks show it."""
    return parse.plain(responses.Occurrence.of(occurrence))


class AttendanceApi:
    def __init__(
        self,
        db: database.Database,
        service: checkins.CheckinService,
        hub: events.Hub,
        clock: clock_mod.Clock,
    ) -> None:
        self.db = db
        self.service = service
        self.hub = hub
        self.clock = clock

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/courses", self.add_course)
        app.router.add_get("/api/v1/courses", self.courses)
        app.router.add_get("/api/v1/courses/{site}/{course}/roster", self.get_roster)
        app.router.add_put("/api/v1/courses/{site}/{course}/roster", self.put_roster)
        app.router.add_post("/api/v1/sessions", self.add_session)
        app.router.add_get("/api/v1/sessions", self.sessions)
        app.router.add_get("/api/v1/sessions/{id}/occurrences", self.occurrences)
        app.router.add_get("/api/v1/sessions/{id}/attendance", self.session_attendance)
        app.router.add_put("/api/v1/sessions/{id}/attendance/{date}/{student}", self.set_status)
        app.router.add_get("/api/v1/students/{site}/{student}/attendance", self.student)
        app.router.add_get("/api/v1/students/{site}/{student}/export", self.export_student)
        app.router.add_delete("/api/v1/students/{site}/{student}", self.erase_student)
        app.router.add_post("/api/v1/checkouts", self.checkout)

    # -- courses and rosters ---------------------------------------------------------------
    @spec.operation(
        "POST",
        "/api/v1/courses",
        "Add a course",
        responses.CourseResult,
        roles=WRITERS,
        ok=201,
        body=bodies.Course,
        errors=(404, 409),
    )
    async def add_course(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, WRITERS)
        course = bodies.course_of(await parse.body(request, bodies.Course))
        auth.require_site(request, course.site, f"site {course.site} does not exist")
        try:
            await self.db.add_course(course)
        except store.NotFound as exc:
            raise errors.ApiError(404, "not_found", str(exc)) from exc
        except store.Conflict as exc:
            raise errors.ApiError(409, "exists", f"course {course.course} exists") from exc
        target = f"{course.site}/{course.course}"
        await audit.api(request, self.db, "course_add", target, site=course.site)
        return parse.respond(
            responses.CourseResult(course=responses.Course.from_record(course)), 201
        )

    @spec.operation(
        "GET",
        "/api/v1/courses",
        "Courses (a teacher sees their own)",
        responses.Courses,
        query=queries.Site,
    )
    async def courses(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        site = auth.list_site(request, parse.query(request, queries.Site).site)
        rows = await self.db.list_courses(site)
        rows = [c for c in rows if auth.sees_course(request, c.site, c.course)]
        return parse.respond(
            responses.Courses(courses=[responses.Course.from_record(c) for c in rows])
        )

    async def _course(self, request: web.Request) -> store.Course:
        site, course = request.match_info["site"], request.match_info["course"]
        found = None
        if names.is_valid(site) and names.is_valid(course) and auth.sees_site(request, site):
            found = await self.db.get_course(site, course)
        if found is None:
            raise errors.ApiError(404, "not_found", "no such course")
        auth.require_course(request, found.site, found.course)
        return found

    @spec.operation(
        "GET",
        "/api/v1/courses/{site}/{course}/roster",
        "A course's roster",
        responses.Roster,
        path_params=queries.SiteCourse,
    )
    async def get_roster(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        course = await self._course(request)
        students = await self.db.roster(course.site, course.course)
        return parse.respond(responses.Roster(course=course.course, students=students))

    @spec.operation(
        "PUT",
        "/api/v1/courses/{site}/{course}/roster",
        "Replace a course's roster (students must exist)",
        responses.Roster,
        roles=TEACHERS,
        path_params=queries.SiteCourse,
        body=bodies.Roster,
    )
    async def put_roster(self, request: web.Request) -> web.Response:
        """Replaces the roster: `{"students": ["id", ...]}`; unknown students are refused."""
        await auth.require(request, self.db, TEACHERS)
        course = await self._course(request)
        students = (await parse.body(request, bodies.Roster)).students
        bad = [s for s in students if not names.is_valid(s)][:20]
        if bad:
            raise errors.ApiError(
                400,
                "invalid_request",
                "invalid student ids",
                {"students": [str(b)[:64] for b in bad]},
            )
        unknown = [s for s in students if await self.db.get_student(course.site, s) is None]
        if unknown:
            raise errors.ApiError(
                404, "unknown_students", "these students do not exist", {"students": unknown[:50]}
            )
        await self.db.set_roster(course.site, course.course, students)
        self.service.rosters.clear()
        roster = await self.db.roster(course.site, course.course)
        target = f"{course.site}/{course.course}"
        await audit.api(
            request, self.db, "roster_set", target, f"{len(roster)} students", course.site
        )
        return parse.respond(responses.Roster(course=course.course, students=roster))

    # -- sessions --------------------------------------------------------------------------
    @spec.operation(
        "POST",
        "/api/v1/sessions",
        "Add a timetable session (one date, or weekly until a date)",
        responses.SessionResult,
        roles=WRITERS,
        ok=201,
        body=bodies.Session,
        errors=(404,),
    )
    async def add_session(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, WRITERS)
        body = await parse.body(request, bodies.Session)
        site, course_name, room = body.site, body.course, body.room
        course = (
            await self.db.get_course(site, course_name) if auth.sees_site(request, site) else None
        )
        if course is None:
            raise errors.ApiError(404, "not_found", f"no course {course_name}")
        if await self.db.get_room(site, room) is None:
            raise errors.ApiError(404, "not_found", f"no room {room}")
        session = await self.db.add_session(bodies.session_of(body, course, room))
        self.service.sessions.clear()
        answer = responses.Session.of(session)
        detail = json.dumps(parse.plain(answer))
        await audit.api(request, self.db, "session_add", str(session.id), detail, session.site)
        return parse.respond(responses.SessionResult(session=answer), status=201)

    @spec.operation(
        "GET",
        "/api/v1/sessions",
        "Timetable sessions",
        responses.Sessions,
        query=queries.Sessions,
    )
    async def sessions(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        query = parse.query(request, queries.Sessions)
        rows = await self.db.list_sessions(
            auth.list_site(request, query.site), query.course, query.room, query.limit, query.after
        )
        visible = [s for s in rows if auth.sees_course(request, s.site, s.course)]
        return parse.respond(
            responses.Sessions(
                sessions=[responses.Session.of(s) for s in visible],
                next_after=rows[-1].id if len(rows) == query.limit else None,
            )
        )

    async def _session(self, request: web.Request) -> timetable.Session:
        session = await self.db.get_session(parse.path(request, queries.Id).id)
        if session is None or not auth.sees_site(request, session.site):
            raise errors.ApiError(404, "not_found", "no such session")
        auth.require_course(request, session.site, session.course)
        return session

    def _occurrence(
        self, session: timetable.Session, date: datetime.date | None
    ) -> timetable.Occurrence:
        """The occurrence on `date`; without one, today's in the session's time zone
        or else its latest past one. A date it does not meet on is a 404 naming the nearest
        dates it does meet on, so a client can recover."""
        if date is None:
            date = timetable.default_date(session, self.clock.now_ms())
        found = timetable.occurrence(session, date)
        if found is None:
            message, details = timetable.not_meeting(session, date)
            raise errors.ApiError(404, "not_found", message, details)
        return found

    @spec.operation(
        "GET",
        "/api/v1/sessions/{id}/occurrences",
        "A session's occurrences between two times (default: a week either side)",
        responses.Occurrences,
        path_params=queries.Id,
        query=queries.Span,
    )
    async def occurrences(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        session = await self._session(request)
        now = self.clock.now_ms()
        span = parse.query(request, queries.Span)
        start = span.from_ or now - 7 * 86400_000
        end = span.to or now + 7 * 86400_000
        if end <= start or end - start > 400 * 86400_000:
            raise errors.ApiError(400, "invalid_request", "from..to must span 1 ms to 400 days")
        rows = timetable.between(session, start, end)
        return parse.respond(
            responses.Occurrences(occurrences=[responses.Occurrence.of(o) for o in rows])
        )

    @spec.operation(
        "GET",
        "/api/v1/sessions/{id}/attendance",
        "Attendance of one occurrence: every roster student's status. `date` is in the"
        " session's time zone; without it, today's occurrence there, else the latest"
        " past one. A date the session does not meet on is a 404 whose details list"
        " the nearest dates it meets on (`meets_on`)",
        responses.AttendanceView,
        path_params=queries.Id,
        query=queries.OccurrenceDate,
    )
    async def session_attendance(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        session = await self._session(request)
        occurrence = self._occurrence(session, parse.query(request, queries.OccurrenceDate).date)
        now = self.clock.now_ms()
        rows = await attendance.report(self.db, occurrence, now)
        return parse.respond(
            responses.AttendanceView(
                occurrence=responses.Occurrence.of(occurrence),
                ended=now >= occurrence.end_ms,
                summary=attendance.summary(rows),
                attendance=[responses.AttendanceRow.of(row) for row in rows],
            )
        )

    @spec.operation(
        "PUT",
        "/api/v1/sessions/{id}/attendance/{date}/{student}",
        "A teacher sets a student's status in an occurrence (excused, ...)",
        responses.AttendanceResult,
        roles=TEACHERS,
        path_params=queries.StatusPath,
        body=bodies.Status,
    )
    async def set_status(self, request: web.Request) -> web.Response:
        """A teacher excuses a student or resolves a flagged check-in."""
        role = await auth.require(request, self.db, TEACHERS)
        session = await self._session(request)
        try:
            day = timetable.parse_date("date", request.match_info["date"])
        except timetable.TimetableError as exc:
            raise errors.ApiError(400, "invalid_request", str(exc), {"field": "date"}) from exc
        occurrence = self._occurrence(session, day)
        student = request.match_info["student"]
        if not names.is_valid(student) or await self.db.get_student(session.site, student) is None:
            raise errors.ApiError(404, "not_found", "no such student")
        body = await parse.body(request, bodies.Status)
        status = body.status
        now = self.clock.now_ms()
        await self.db.set_override(
            store.Override(session.id, occurrence.key, student, status, body.note, role, now)
        )
        target = f"{session.id}/{occurrence.key}/{student}"
        await audit.api(request, self.db, "attendance_set", target, status, session.site)
        rows = await attendance.report(self.db, occurrence, now)
        row = responses.AttendanceRow.of(next(r for r in rows if r.student_id == student))
        self.hub.publish(
            "attendance",
            {
                "site": session.site,
                "session_id": session.id,
                "date": occurrence.key,
                **parse.plain(row),
            },
        )
        return parse.respond(responses.AttendanceResult(attendance=row))

    @spec.operation(
        "GET",
        "/api/v1/students/{site}/{student}/attendance",
        "A student's status in every occurrence of their courses",
        responses.StudentAttendance,
        path_params=queries.SiteStudent,
        query=queries.StudentAttendance,
    )
    async def student(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        site, student = request.match_info["site"], request.match_info["student"]
        if not (
            names.is_valid(site) and names.is_valid(student) and auth.sees_site(request, site)
        ) or (await self.db.get_student(site, student) is None):
            raise errors.ApiError(404, "not_found", "no such student")
        now = self.clock.now_ms()
        query = parse.query(request, queries.StudentAttendance)
        start = query.from_ or now - HISTORY_DAYS * 86400_000
        end = query.to or now
        limit, offset = query.limit, query.offset
        history = [
            (occurrence, row)
            for occurrence, row in await attendance.student_history(
                self.db, site, student, start, end, now
            )
            if auth.sees_course(request, site, occurrence.session.course)
        ]
        page = history[offset : offset + limit]
        counts: dict[str, int] = {}
        for _, row in history:
            counts[row.status] = counts.get(row.status, 0) + 1
        return parse.respond(
            responses.StudentAttendance(
                student_id=student,
                summary=counts,
                attendance=[
                    responses.StudentOccurrence(
                        **dict(responses.Occurrence.of(o)), **dict(responses.AttendanceRow.of(row))
                    )
                    for o, row in page
                ],
                next_offset=offset + limit if offset + limit < len(history) else None,
            )
        )

    @spec.operation(
        "GET",
        "/api/v1/students/{site}/{student}/export",
        "Everything stored about a student (data subject access)",
        responses.StudentExport,
        roles=WRITERS,
        path_params=queries.SiteStudent,
    )
    async def export_student(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, WRITERS)
        site, student = request.match_info["site"], request.match_info["student"]
        auth.require_site(request, site, f"no student {site}/{student}")
        try:
            data = await privacy.export(self.db, site, student)
        except privacy.NoSuchStudent as exc:
            raise errors.ApiError(404, "not_found", str(exc)) from exc
        await audit.api(request, self.db, "student_export", f"{site}/{student}", site=site)
        return web.json_response(data)

    @spec.operation(
        "DELETE",
        "/api/v1/students/{site}/{student}",
        "Forget a student entirely",
        responses.Erased,
        roles=WRITERS,
        path_params=queries.SiteStudent,
    )
    async def erase_student(self, request: web.Request) -> web.Response:
        """Forgets the student: records, evidence links, overrides, enrolments, credentials."""
        await auth.require(request, self.db, WRITERS)
        site, student = request.match_info["site"], request.match_info["student"]
        if not (names.is_valid(site) and names.is_valid(student)):
            raise errors.ApiError(404, "not_found", "no such student")
        auth.require_site(request, site, f"no student {site}/{student}")
        try:
            deleted = await privacy.erase(self.db, site, student)
        except privacy.NoSuchStudent as exc:
            raise errors.ApiError(404, "not_found", str(exc)) from exc
        self.service.rosters.clear()
        self.service.forget_credentials()
        target = f"{site}/{student}"
        await audit.api(request, self.db, "student_erase", target, json.dumps(deleted), site)
        return parse.respond(responses.Erased(erased=f"{site}/{student}", deleted=deleted))

    @spec.operation(
        "POST",
        "/api/v1/checkouts",
        "A student checks out of a venue session (duration kept)",
        responses.CheckoutResult,
        roles=None,
        ok=201,
        body=bodies.Checkin,
        errors=(403, 404, 409, 415, 429),
        tag="students",
    )
    async def checkout(self, request: web.Request) -> web.Response:
        csrf.check(request, self.service.settings.public_url)
        body = await parse.body(request, bodies.Checkin)
        parsed = body.request(request.cookies.get(STUDENT_COOKIE))
        proxies = netaddr.networks(self.service.settings.trusted_proxies)
        checkin = await self.service.check_out(parsed, clientip.client_ip(request, proxies))
        duration = (checkin.checked_out_at or checkin.created_at) - checkin.created_at
        answer = responses.Checkout(
            checkin_id=checkin.id,
            student_id=checkin.student_id,
            session_id=checkin.session_id,
            session_date=checkin.session_date,
            checked_in_at=checkin.created_at,
            checked_out_at=checkin.checked_out_at,
            duration_s=duration // 1000,
        )
        result = parse.plain(answer)
        self.hub.publish("checkout", {"site": checkin.site, "room": checkin.room, **result})
        return parse.respond(responses.CheckoutResult(checkout=answer), status=201)
