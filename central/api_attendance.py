"""HTTP routes for courses, rosters, timetable sessions, attendance and venue check-out."""

from __future__ import annotations

import json
import typing

from aiohttp import web

from central import attendance
from central import audit
from central import auth
from central import checkins
from central import clientip
from central import clock as clock_mod
from central import csrf
from central import errors
from central import events
from central import params
from central import privacy
from central import store
from central import timetable
from edge_agent.protocol import names

WRITERS = ("admin",)
TEACHERS = ("admin", "teacher")
STUDENT_COOKIE = "roomproof_student"
MAX_ROSTER = 5000
HISTORY_DAYS = 120


def session_json(session: timetable.Session) -> dict[str, typing.Any]:
    return {
        "id": session.id,
        "site": session.site,
        "course": session.course,
        "room": session.room,
        "timezone": session.timezone,
        "first_date": session.first_date.isoformat(),
        "start": session.start.isoformat("minutes"),
        "end": session.end.isoformat("minutes"),
        "weekly": session.weekly,
        "until": session.until.isoformat() if session.until else None,
        "grace_min": session.grace_min,
        "checkout": session.checkout,
    }


def occurrence_json(occurrence: timetable.Occurrence) -> dict[str, typing.Any]:
    return {
        "session_id": occurrence.session.id,
        "course": occurrence.session.course,
        "room": occurrence.session.room,
        "date": occurrence.key,
        "timezone": occurrence.session.timezone,
        "starts_at": params.iso(occurrence.start_ms),
        "late_after": params.iso(occurrence.late_after_ms),
        "ends_at": params.iso(occurrence.end_ms),
    }


def _name(body: dict[str, typing.Any], key: str) -> str:
    value = body.get(key)
    if not names.is_valid(value):
        raise errors.ApiError(400, "invalid_request", f"{key} must be a valid name", {"field": key})
    return typing.cast(str, value)


def _text(body: dict[str, typing.Any], key: str, default: str, limit: int = 200) -> str:
    value = body.get(key, default)
    if isinstance(value, str) and any(ord(c) < 32 and c not in "\t\n" for c in value):
        raise errors.ApiError(
            400, "invalid_request", f"{key} must not contain control characters", {"field": key}
        )
    if not isinstance(value, str) or len(value) > limit:
        raise errors.ApiError(
            400, "invalid_request", f"{key} must be text up to {limit} characters", {"field": key}
        )
    return value


def _bool(body: dict[str, typing.Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise errors.ApiError(
            400, "invalid_request", f"{key} must be true or false", {"field": key}
        )
    return value


def _unknown(body: dict[str, typing.Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise errors.ApiError(400, "invalid_request", "unknown fields", {"fields": unknown})


def course_from_body(body: dict[str, typing.Any]) -> store.Course:
    """A course's rules, shared by `POST /api/v1/courses` and the CSV import."""
    _unknown(body, {"site", "course", "name", "timezone"})
    timezone = _text(body, "timezone", "UTC", 64)
    try:
        timetable.zone(timezone)
    except timetable.TimetableError as exc:
        raise errors.ApiError(400, "invalid_request", str(exc), {"field": "timezone"}) from exc
    return store.Course(
        _name(body, "site"), _name(body, "course"), _text(body, "name", ""), timezone
    )


SESSION_FIELDS = frozenset(
    {
        "site",
        "course",
        "room",
        "first_date",
        "start",
        "end",
        "weekly",
        "until",
        "grace_min",
        "checkout",
        "timezone",
    }
)


def session_from_body(
    body: dict[str, typing.Any], course: store.Course, room: str
) -> timetable.Session:
    """A session's rules (once its course and room exist), shared by `POST /api/v1/sessions`
    and the CSV import."""
    grace = body.get("grace_min", 5)
    if not isinstance(grace, int) or isinstance(grace, bool):
        raise errors.ApiError(
            400, "invalid_request", "grace_min must be an integer", {"field": "grace_min"}
        )
    try:
        session = timetable.Session(
            id=0,
            site=course.site,
            course=course.course,
            room=room,
            timezone=_text(body, "timezone", course.timezone, 64),
            first_date=timetable.parse_date("first_date", body.get("first_date")),
            start=timetable.parse_time("start", body.get("start")),
            end=timetable.parse_time("end", body.get("end")),
            weekly=_bool(body, "weekly"),
            until=(
                timetable.parse_date("until", body["until"])
                if body.get("until") is not None
                else None
            ),
            grace_min=grace,
            checkout=_bool(body, "checkout"),
        )
        timetable.validate(session)
    except timetable.TimetableError as exc:
        raise errors.ApiError(400, "invalid_request", str(exc), {"field": exc.field}) from exc
    return session


class AttendanceApi:
    def __init__(
        self,
        db: store.Store,
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
    async def add_course(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, WRITERS)
        body = await params.json_object(request)
        course = course_from_body(body)
        auth.require_site(request, course.site, f"site {course.site} does not exist")
        try:
            await self.db.add_course(course)
        except store.NotFound as exc:
            raise errors.ApiError(404, "not_found", str(exc)) from exc
        except store.Conflict as exc:
            raise errors.ApiError(409, "exists", f"course {course.course} exists") from exc
        target = f"{course.site}/{course.course}"
        await audit.api(request, self.db, "course_add", target, site=course.site)
        return web.json_response({"course": course.__dict__}, status=201)

    async def courses(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        rows = await self.db.list_courses(
            auth.list_site(request, params.name_param(request, "site"))
        )
        rows = [c for c in rows if auth.sees_course(request, c.site, c.course)]
        return web.json_response({"courses": [c.__dict__ for c in rows]})

    async def _course(self, request: web.Request) -> store.Course:
        site, course = request.match_info["site"], request.match_info["course"]
        found = None
        if names.is_valid(site) and names.is_valid(course) and auth.sees_site(request, site):
            found = await self.db.get_course(site, course)
        if found is None:
            raise errors.ApiError(404, "not_found", "no such course")
        auth.require_course(request, found.site, found.course)
        return found

    async def get_roster(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        course = await self._course(request)
        students = await self.db.roster(course.site, course.course)
        return web.json_response({"course": course.course, "students": students})

    async def put_roster(self, request: web.Request) -> web.Response:
        """Replaces the roster: `{"students": ["id", ...]}`; unknown students are refused."""
        await auth.require(request, self.db, TEACHERS)
        course = await self._course(request)
        body = await params.json_object(request)
        _unknown(body, {"students"})
        students = body.get("students")
        if not isinstance(students, list) or len(students) > MAX_ROSTER:
            raise errors.ApiError(
                400, "invalid_request", f"students must be a list of up to {MAX_ROSTER} ids"
            )
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
        return web.json_response({"course": course.course, "students": roster})

    # -- sessions --------------------------------------------------------------------------
    async def add_session(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, WRITERS)
        body = await params.json_object(request)
        _unknown(body, set(SESSION_FIELDS))
        site, course_name, room = _name(body, "site"), _name(body, "course"), _name(body, "room")
        course = (
            await self.db.get_course(site, course_name) if auth.sees_site(request, site) else None
        )
        if course is None:
            raise errors.ApiError(404, "not_found", f"no course {course_name}")
        if await self.db.get_room(site, room) is None:
            raise errors.ApiError(404, "not_found", f"no room {room}")
        session = session_from_body(body, course, room)
        session = await self.db.add_session(session)
        self.service.sessions.clear()
        detail = json.dumps(session_json(session))
        await audit.api(request, self.db, "session_add", str(session.id), detail, session.site)
        return web.json_response({"session": session_json(session)}, status=201)

    async def sessions(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        limit = params.int_param(request, "limit", 100, 1, 1000)
        rows = await self.db.list_sessions(
            auth.list_site(request, params.name_param(request, "site")),
            params.name_param(request, "course"),
            params.name_param(request, "room"),
            limit,
            params.int_param(request, "after", 0, 0, 2**62),
        )
        visible = [s for s in rows if auth.sees_course(request, s.site, s.course)]
        return web.json_response(
            {
                "sessions": [session_json(s) for s in visible],
                "next_after": rows[-1].id if len(rows) == limit else None,
            }
        )

    async def _session(self, request: web.Request) -> timetable.Session:
        session = await self.db.get_session(params.path_int(request, "id"))
        if session is None or not auth.sees_site(request, session.site):
            raise errors.ApiError(404, "not_found", "no such session")
        auth.require_course(request, session.site, session.course)
        return session

    def _occurrence(self, session: timetable.Session, text: str | None) -> timetable.Occurrence:
        """The occurrence on `text`'s date; without one, today's in the session's time zone
        or else its latest past one. A date it does not meet on is a 404 naming the nearest
        dates it does meet on, so a client can recover."""
        if text is None:
            date = timetable.default_date(session, self.clock.now_ms())
        else:
            try:
                date = timetable.parse_date("date", text)
            except timetable.TimetableError as exc:
                raise errors.ApiError(400, "invalid_request", str(exc), {"field": "date"}) from exc
        found = timetable.occurrence(session, date)
        if found is None:
            message, details = timetable.not_meeting(session, date)
            raise errors.ApiError(404, "not_found", message, details)
        return found

    async def occurrences(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        session = await self._session(request)
        now = self.clock.now_ms()
        start = params.time_param(request, "from") or now - 7 * 86400_000
        end = params.time_param(request, "to") or now + 7 * 86400_000
        if end <= start or end - start > 400 * 86400_000:
            raise errors.ApiError(400, "invalid_request", "from..to must span 1 ms to 400 days")
        rows = timetable.between(session, start, end)
        return web.json_response({"occurrences": [occurrence_json(o) for o in rows]})

    async def session_attendance(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        session = await self._session(request)
        occurrence = self._occurrence(session, request.query.get("date"))
        now = self.clock.now_ms()
        rows = await attendance.report(self.db, occurrence, now)
        return web.json_response(
            {
                "occurrence": occurrence_json(occurrence),
                "ended": now >= occurrence.end_ms,
                "summary": attendance.summary(rows),
                "attendance": [row.json(params.iso) for row in rows],
            }
        )

    async def set_status(self, request: web.Request) -> web.Response:
        """A teacher excuses a student or resolves a flagged check-in."""
        role = await auth.require(request, self.db, TEACHERS)
        session = await self._session(request)
        occurrence = self._occurrence(session, request.match_info["date"])
        student = request.match_info["student"]
        if not names.is_valid(student) or await self.db.get_student(session.site, student) is None:
            raise errors.ApiError(404, "not_found", "no such student")
        body = await params.json_object(request)
        _unknown(body, {"status", "note"})
        status = body.get("status")
        if not isinstance(status, str) or status not in attendance.TEACHER_STATUSES:
            raise errors.ApiError(
                400,
                "invalid_request",
                f"status must be one of {sorted(attendance.TEACHER_STATUSES)}",
                {"field": "status"},
            )
        now = self.clock.now_ms()
        await self.db.set_override(
            store.Override(
                session.id, occurrence.key, student, status, _text(body, "note", "", 500), role, now
            )
        )
        target = f"{session.id}/{occurrence.key}/{student}"
        await audit.api(request, self.db, "attendance_set", target, status, session.site)
        rows = await attendance.report(self.db, occurrence, now)
        row = next(r for r in rows if r.student_id == student)
        self.hub.publish(
            "attendance",
            {
                "site": session.site,
                "session_id": session.id,
                "date": occurrence.key,
                **row.json(params.iso),
            },
        )
        return web.json_response({"attendance": row.json(params.iso)})

    async def student(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        site, student = request.match_info["site"], request.match_info["student"]
        if not (
            names.is_valid(site) and names.is_valid(student) and auth.sees_site(request, site)
        ) or (await self.db.get_student(site, student) is None):
            raise errors.ApiError(404, "not_found", "no such student")
        now = self.clock.now_ms()
        start = params.time_param(request, "from") or now - HISTORY_DAYS * 86400_000
        end = params.time_param(request, "to") or now
        limit = params.int_param(request, "limit", 100, 1, 1000)
        offset = params.int_param(request, "offset", 0, 0, 10**6)
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
        return web.json_response(
            {
                "student_id": student,
                "summary": counts,
                "attendance": [{**occurrence_json(o), **row.json(params.iso)} for o, row in page],
                "next_offset": offset + limit if offset + limit < len(history) else None,
            }
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
        return web.json_response({"erased": f"{site}/{student}", "deleted": deleted})

    async def checkout(self, request: web.Request) -> web.Response:
        csrf.check(request, self.service.settings.public_url)
        body = await params.json_object(request)
        parsed = checkins.Request.parse(body, request.cookies.get(STUDENT_COOKIE))
        proxies = clientip.networks(self.service.settings.trusted_proxies)
        checkin = await self.service.check_out(parsed, clientip.client_ip(request, proxies))
        duration = (checkin.checked_out_at or checkin.created_at) - checkin.created_at
        result = {
            "checkin_id": checkin.id,
            "student_id": checkin.student_id,
            "session_id": checkin.session_id,
            "session_date": checkin.session_date,
            "checked_in_at": params.iso(checkin.created_at),
            "checked_out_at": params.iso(checkin.checked_out_at),
            "duration_s": duration // 1000,
        }
        self.hub.publish("checkout", {"site": checkin.site, "room": checkin.room, **result})
        return web.json_response({"checkout": result}, status=201)
