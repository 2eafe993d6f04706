"""The OpenAPI 3.1 description of the JSON API, built in code beside the handlers and served
at GET /api/v1/openapi.json. tests/central/test_openapi.py checks that it names exactly the
routes the application registers and runs schemathesis against a live central, so the
description cannot drift from the code unnoticed."""

from __future__ import annotations

import functools
import typing

from aiohttp import web

from central import csvimport
from edge_agent.protocol import command
from edge_agent.protocol import names

Schema = dict[str, typing.Any]
PATH = "/api/v1/openapi.json"

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time"}
NAME: Schema = {"type": "string", "pattern": f"^{names.PATTERN.pattern}$"}
ANY_OBJECT: Schema = {"type": "object"}
ADMIN = ("admin",)
READERS = ("admin", "teacher", "auditor")

ERROR_TEXT = {
    400: "The request is invalid (error.details names the field).",
    401: "No, or an unknown, bearer token.",
    403: "The token's role (or a teacher's courses) does not allow this.",
    404: "No such resource (another site's answers exactly like one that does not exist).",
    409: "The request conflicts with the current state.",
    413: "The body is too large.",
    415: "The body's media type is not accepted.",
    429: "Too many requests from this client; wait (Retry-After).",
    503: "The store (store_unavailable), or for commands the broker, is unavailable; retry"
    " after Retry-After.",
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def null(schema: Schema) -> Schema:
    """The schema, or null."""
    if "type" in schema and "$ref" not in schema:
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def body_schema(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """A request body: these fields and no others (handlers refuse unknown fields)."""
    return {**obj(required, optional), "additionalProperties": False}


SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": STR,
                    "message": STR,
                    "details": ANY_OBJECT,
                    "request_id": STR,
                }
            )
        }
    ),
    "Checkin": obj(
        {
            "id": INT,
            "site": STR,
            "room": STR,
            "device": STR,
            "student_id": STR,
            "slot": INT,
            "method": {"type": "string", "enum": ["qr", "otp"]},
            "created_at": TIME,
            "token_age_ms": INT,
            "status": STR,
            "flags": array(STR),
            "session_id": null(INT),
            "session_date": null(STR),
            "checked_out_at": null(TIME),
            "duration_s": null(INT),
            "evidence": ANY_OBJECT,
        }
    ),
    "Device": obj(
        {
            "site": STR,
            "room": STR,
            "device": STR,
            "online": BOOL,
            "enrolled": BOOL,
            "last_seq": INT,
            "last_proof_at": null(TIME),
            "public_key": null(STR),
            "x25519_public_key": null(STR),
            "clock_offset_ms": null(INT),
            "slot_s": null(INT),
            "otp_step_s": null(INT),
            "otp_digest": null(STR),
            "verdict": null(STR),
            "telemetry": null(ANY_OBJECT),
        }
    ),
    "Proof": obj(
        {
            "site": STR,
            "device": STR,
            "seq": INT,
            "slot": INT,
            "iat": INT,
            "received_at": TIME,
            "hash": STR,
            "gap_before": BOOL,
            "verdict": null(STR),
            "reasons": array(STR),
            "jws": STR,
        }
    ),
    "Profile": obj(
        {
            "state": STR,
            "wifi": array(STR),
            "ble": array(STR),
            "learned": INT,
            "learn_proofs": INT,
        }
    ),
    "Room": obj(
        {
            "site": STR,
            "room": STR,
            "name": STR,
            "lat": null(NUM),
            "lon": null(NUM),
            "radius_m": NUM,
        },
        {"profile": null(ref("Profile"))},
    ),
    "Alert": obj(
        {
            "id": INT,
            "site": STR,
            "device": STR,
            "kind": STR,
            "reason": STR,
            "raised_at": TIME,
            "cleared_at": null(TIME),
        }
    ),
    "ChainEvent": obj(
        {
            "id": INT,
            "site": STR,
            "device": STR,
            "kind": STR,
            "first": INT,
            "last": INT,
            "detail": STR,
            "detected_at": TIME,
            "resolved_at": null(TIME),
        }
    ),
    "Token": obj(
        {
            "id": STR,
            "role": {"type": "string", "enum": [*READERS, "operator"]},
            "site": null(STR),
            "name": STR,
            "created_at": TIME,
            "courses": array(STR),  # "site/course" a teacher token is limited to
        }
    ),
    "AuditEntry": obj(
        {
            "id": INT,
            "at": TIME,
            "actor": STR,
            "action": STR,
            "target": STR,
            "detail": STR,
            "site": null(STR),
        }
    ),
    "Command": obj({"kind": STR, "nonce": STR, "sent_at": TIME, "expires_at": TIME}),
    "Course": obj({"site": STR, "course": STR, "name": STR, "timezone": STR}),
    "Session": obj(
        {
            "id": INT,
            "site": STR,
            "course": STR,
            "room": STR,
            "timezone": STR,
            "first_date": {"type": "string", "format": "date"},
            "start": STR,
            "end": STR,
            "weekly": BOOL,
            "until": null({"type": "string", "format": "date"}),
            "grace_min": INT,
            "checkout": BOOL,
        }
    ),
    "Occurrence": obj(
        {
            "session_id": INT,
            "course": STR,
            "room": STR,
            "date": {"type": "string", "format": "date"},
            "timezone": STR,
            "starts_at": TIME,
            "late_after": TIME,
            "ends_at": TIME,
        }
    ),
    "AttendanceRow": obj(
        {
            "student_id": STR,
            "status": {
                "type": "string",
                "enum": ["present", "late", "flagged", "excused", "absent", "pending"],
            },
            "on_roster": BOOL,
            "checkin_id": null(INT),
            "checked_in_at": null(TIME),
            "checked_out_at": null(TIME),
            "duration_s": null(INT),
            "flags": array(STR),
            "checkin_status": null(STR),
            "override": null(obj({"status": STR, "note": STR, "set_by": STR, "set_at": TIME})),
        }
    ),
    "Summary": {"type": "object", "additionalProperties": INT},
    "Webhook": obj(
        {
            "id": INT,
            "site": null(STR),
            "url": {"type": "string", "format": "uri"},
            "events": array({"type": "string", "enum": ["checkin", "session_closed"]}),
            "description": STR,
            "created_at": TIME,
        }
    ),
    "Delivery": obj(
        {
            "id": INT,
            "event_id": STR,
            "event_type": STR,
            "state": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            "created_at": TIME,
            "attempts": INT,
            "last_status": null(INT),
            "last_error": null(STR),
            "next_attempt_at": null(TIME),
            "delivered_at": null(TIME),
        }
    ),
}

NEXT_AFTER = null(INT)


def _path_param(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: Schema, description: str = "") -> Schema:
    found: Schema = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        found["description"] = description
    return found


def _limit(high: int, default: int) -> Schema:
    return _query("limit", {"type": "integer", "minimum": 1, "maximum": high, "default": default})


AFTER = _query("after", {"type": "integer", "minimum": 0, "maximum": 2**62}, "page after this id")
ID = _path_param("id", {"type": "integer", "minimum": 0, "maximum": 10**18 - 1})
SITE_QUERY = _query("site", NAME)
TIME_QUERY = {"type": "string", "description": "RFC 3339 with a timezone, or unix ms"}


def _name_params(*keys: str) -> list[Schema]:
    return [_path_param(key, NAME) for key in keys]


def _op(
    summary: str,
    result: Schema,
    *,
    roles: tuple[str, ...] | None = READERS,
    ok: int = 200,
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    body_required: bool = True,
    errors: tuple[int, ...] = (),
    media: str = "application/json",
    body_media: str = "application/json",
    tag: str = "admin",
) -> Schema:
    """One operation; roles None means public (no token)."""
    parameters = parameters or []
    codes = set(errors) | {400, 503}  # 503 store_unavailable: any route during a store outage
    if roles is not None:
        codes |= {401, 403}
    if any(p["in"] == "path" or p["name"] == "site" for p in parameters):
        codes.add(404)  # a path or ?site= of another site answers as one that does not exist
    if body is not None:
        codes |= {413}
    operation: Schema = {
        "summary": summary,
        "tags": [tag],
        "parameters": parameters,
        "security": [{"bearer": []}] if roles is not None else [],
        "responses": {
            str(ok): {"description": "OK", "content": {media: {"schema": result}}},
            **{str(code): {"$ref": f"#/components/responses/E{code}"} for code in sorted(codes)},
        },
    }
    if roles is not None:
        with_operator = (*roles, "operator") if "admin" in roles else roles
        operation["description"] = (
            "Roles: " + ", ".join(with_operator) + ". Limited to the token's site"
            " (an operator's: every site)."
        )
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {body_media: {"schema": body}},
        }
    return operation


def _paths() -> dict[str, dict[str, Schema]]:
    page = [_limit(1000, 100), AFTER]
    attendance_view = obj(
        {
            "occurrence": ref("Occurrence"),
            "ended": BOOL,
            "summary": ref("Summary"),
            "attendance": array(ref("AttendanceRow")),
        }
    )
    checkin_request = body_schema(
        {},
        {
            "token": STR,
            "site": STR,
            "room": STR,
            "otp": STR,
            "student_id": STR,
            "pin": STR,
            "credential": STR,
            "geo": ANY_OBJECT,
        },
    )
    return {
        PATH: {
            "get": _op(
                "This description (OpenAPI 3.1)", ANY_OBJECT, roles=None, tag="meta", errors=()
            )
        },
        "/api/v1/keys": {
            "get": _op(
                "Central's public keys (Ed25519 for signatures, X25519 for agreement)",
                obj({"ed25519": STR, "x25519": STR}),
                roles=None,
                tag="meta",
            )
        },
        "/api/v1/checkins": {
            "post": _op(
                "A student checks in: the QR token or the room's one-time code, then the"
                " student id and PIN (or the remembered credential)",
                obj(
                    {"checkin": ref("Checkin")},
                    {"session": ANY_OBJECT, "credential": STR},
                ),
                roles=None,
                ok=201,
                body=checkin_request,
                errors=(403, 404, 409, 415, 429),
                tag="students",
            ),
            "get": _op(
                "Check-ins, oldest first (a teacher's: those of its courses' sessions)",
                obj({"checkins": array(ref("Checkin")), "next_after": NEXT_AFTER}),
                parameters=[
                    SITE_QUERY,
                    _query("room", NAME),
                    _query("since", TIME_QUERY),
                    _limit(10000, 1000),
                    AFTER,
                    _query("student", NAME),
                ],
            ),
        },
        "/api/v1/checkouts": {
            "post": _op(
                "A student checks out of a venue session (duration kept)",
                obj({"checkout": ANY_OBJECT}),
                roles=None,
                ok=201,
                body=checkin_request,
                errors=(403, 404, 409, 415, 429),
                tag="students",
            )
        },
        "/api/v1/devices": {
            "get": _op(
                "Devices with status, keys and last telemetry",
                obj({"devices": array(ref("Device"))}),
                parameters=[SITE_QUERY],
            )
        },
        "/api/v1/proofs": {
            "get": _op(
                "A device's latest stored proofs",
                obj({"proofs": array(ref("Proof"))}),
                parameters=[
                    SITE_QUERY,
                    {**_query("device", NAME), "required": True},
                    _limit(1000, 100),
                ],
            )
        },
        "/api/v1/rejections": {
            "get": _op(
                "Counts of rejected input by reason, and the latest rejections",
                obj(
                    {
                        "counts": {"type": "object", "additionalProperties": INT},
                        "recent": array(ANY_OBJECT),
                    }
                ),
            )
        },
        "/api/v1/events": {
            "get": _op(
                "Server-Sent Events: proof, checkin, checkout, device, alert, attendance"
                " (a teacher's: checkin, checkout, attendance of its courses' sessions);"
                " 429 beyond event_streams_per_token open streams of one token",
                STR,
                media="text/event-stream",
                errors=(429,),
            )
        },
        "/api/v1/rooms": {
            "get": _op(
                "Rooms with geofence and environment profile",
                obj({"rooms": array(ref("Room"))}),
                parameters=[SITE_QUERY],
            )
        },
        "/api/v1/rooms/{site}/{room}": {
            "patch": _op(
                "Set a room's geofence (lat and lon together, or both null)",
                obj({"room": ref("Room")}),
                roles=ADMIN,
                parameters=_name_params("site", "room"),
                body=body_schema(
                    {},
                    {
                        "lat": null({"type": "number", "minimum": -90, "maximum": 90}),
                        "lon": null({"type": "number", "minimum": -180, "maximum": 180}),
                        "radius_m": {"type": "number", "exclusiveMinimum": 0, "maximum": 100000},
                    },
                ),
            )
        },
        "/api/v1/rooms/{site}/{room}/profile": {
            "post": _op(
                "Confirm a learned environment profile, or relearn it",
                obj({"profile": ref("Profile")}),
                roles=ADMIN,
                parameters=_name_params("site", "room"),
                body=body_schema(
                    {"action": {"type": "string", "enum": ["confirm", "relearn"]}},
                    {
                        "learn_proofs": {"type": "integer", "minimum": 1, "maximum": 10000},
                        "wifi": null(array(STR)),
                        "ble": null(array(STR)),
                    },
                ),
                errors=(409,),
            )
        },
        "/api/v1/alerts": {
            "get": _op(
                "Alerts (displaced, offline, clock, gap, fork)",
                obj({"alerts": array(ref("Alert")), "next_after": NEXT_AFTER}),
                parameters=[
                    SITE_QUERY,
                    _query(
                        "open",
                        {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]},
                    ),
                    _limit(1000, 100),
                    AFTER,
                    _query(
                        "kind",
                        {
                            "type": "string",
                            "enum": ["displaced", "offline", "clock", "gap", "fork"],
                        },
                    ),
                ],
            )
        },
        "/api/v1/alerts/{id}/clear": {
            "post": _op(
                "Clear an alert that does not clear itself",
                obj({"alert": ref("Alert")}),
                roles=ADMIN,
                parameters=[ID],
                errors=(409,),
            )
        },
        "/api/v1/chain-events": {
            "get": _op(
                "Proof-chain gaps and forks",
                obj({"events": array(ref("ChainEvent")), "next_after": NEXT_AFTER}),
                parameters=[SITE_QUERY, _query("device", NAME), *page],
            )
        },
        "/api/v1/tokens": {
            "get": _op(
                "Admin API tokens (ids, roles, names; never the secrets)",
                obj({"tokens": array(ref("Token"))}),
                roles=ADMIN,
            )
        },
        "/api/v1/tokens/{id}": {
            "delete": _op(
                "Revoke a token by its id",
                obj({"revoked": STR}),
                roles=ADMIN,
                parameters=[_path_param("id", STR)],
            )
        },
        "/api/v1/devices/{site}/{device}/commands": {
            "post": _op(
                "Send a signed command (show_message, status_report) to a device",
                obj({"command": ref("Command")}),
                roles=ADMIN,
                ok=201,
                parameters=_name_params("site", "device"),
                body=body_schema(
                    {"kind": {"type": "string", "enum": sorted(command.KINDS)}},
                    {
                        "args": ANY_OBJECT,
                        "ttl_s": {"type": "integer", "minimum": 1, "maximum": 86400},
                    },
                ),
                errors=(503,),
            ),
            "get": _op(
                "Commands this central sent to the device",
                obj({"commands": array(ref("Command"))}),
                parameters=_name_params("site", "device"),
            ),
        },
        "/api/v1/devices/{site}/{device}/keys": {
            "get": _op(
                "A device's key history: each key, the seq it signs from, what introduced it",
                obj(
                    {
                        "keys": array(
                            obj(
                                {
                                    "kind": STR,
                                    "room": STR,
                                    "from_seq": INT,
                                    "public_key": STR,
                                    "x25519_public_key": STR,
                                    "added_at": TIME,
                                    "current": BOOL,
                                    "evidence": STR,
                                    "note": STR,
                                }
                            )
                        )
                    }
                ),
                roles=("admin", "auditor"),
                parameters=_name_params("site", "device"),
            )
        },
        "/api/v1/audit": {
            "get": _op(
                "The audit log of admin actions",
                obj({"audit": array(ref("AuditEntry")), "next_after": NEXT_AFTER}),
                roles=("admin", "auditor"),
                parameters=page,
            )
        },
        "/api/v1/courses": {
            "post": _op(
                "Add a course",
                obj({"course": ref("Course")}),
                roles=ADMIN,
                ok=201,
                body=body_schema(
                    {"site": NAME, "course": NAME},
                    {"name": {"type": "string", "maxLength": 200}, "timezone": STR},
                ),
                errors=(404, 409),
            ),
            "get": _op(
                "Courses (a teacher sees their own)",
                obj({"courses": array(ref("Course"))}),
                parameters=[SITE_QUERY],
            ),
        },
        "/api/v1/courses/{site}/{course}/roster": {
            "get": _op(
                "A course's roster",
                obj({"course": STR, "students": array(STR)}),
                parameters=_name_params("site", "course"),
            ),
            "put": _op(
                "Replace a course's roster (students must exist)",
                obj({"course": STR, "students": array(STR)}),
                roles=("admin", "teacher"),
                parameters=_name_params("site", "course"),
                body=body_schema({"students": array(NAME)}),
            ),
        },
        "/api/v1/sessions": {
            "post": _op(
                "Add a timetable session (one date, or weekly until a date)",
                obj({"session": ref("Session")}),
                roles=ADMIN,
                ok=201,
                body=body_schema(
                    {
                        "site": NAME,
                        "course": NAME,
                        "room": NAME,
                        "first_date": {"type": "string", "format": "date"},
                        "start": STR,
                        "end": STR,
                    },
                    {
                        "weekly": BOOL,
                        "until": null({"type": "string", "format": "date"}),
                        "grace_min": {"type": "integer", "minimum": 0, "maximum": 240},
                        "checkout": BOOL,
                        "timezone": STR,
                    },
                ),
                errors=(404,),
            ),
            "get": _op(
                "Timetable sessions",
                obj({"sessions": array(ref("Session")), "next_after": NEXT_AFTER}),
                parameters=[SITE_QUERY, _query("course", NAME), _query("room", NAME), *page],
            ),
        },
        "/api/v1/sessions/{id}/occurrences": {
            "get": _op(
                "A session's occurrences between two times (default: a week either side)",
                obj({"occurrences": array(ref("Occurrence"))}),
                parameters=[ID, _query("from", TIME_QUERY), _query("to", TIME_QUERY)],
            )
        },
        "/api/v1/sessions/{id}/attendance": {
            "get": _op(
                "Attendance of one occurrence: every roster student's status. `date` is in the"
                " session's time zone; without it, today's occurrence there, else the latest"
                " past one. A date the session does not meet on is a 404 whose details list"
                " the nearest dates it meets on (`meets_on`)",
                attendance_view,
                parameters=[ID, _query("date", {"type": "string", "format": "date"})],
            )
        },
        "/api/v1/sessions/{id}/attendance/{date}/{student}": {
            "put": _op(
                "A teacher sets a student's status in an occurrence (excused, ...)",
                obj({"attendance": ref("AttendanceRow")}),
                roles=("admin", "teacher"),
                parameters=[
                    ID,
                    _path_param("date", {"type": "string", "format": "date"}),
                    _path_param("student", NAME),
                ],
                body=body_schema(
                    {
                        "status": {
                            "type": "string",
                            "enum": ["present", "late", "excused", "absent"],
                        }
                    },
                    {"note": {"type": "string", "maxLength": 500}},
                ),
            )
        },
        "/api/v1/students/{site}/{student}/attendance": {
            "get": _op(
                "A student's status in every occurrence of their courses",
                obj(
                    {
                        "student_id": STR,
                        "summary": ref("Summary"),
                        "attendance": array(ANY_OBJECT),
                        "next_offset": null(INT),
                    }
                ),
                parameters=[
                    *_name_params("site", "student"),
                    _query("from", TIME_QUERY),
                    _query("to", TIME_QUERY),
                    _limit(1000, 100),
                    _query("offset", {"type": "integer", "minimum": 0, "maximum": 10**6}),
                ],
            )
        },
        "/api/v1/students/{site}/{student}/export": {
            "get": _op(
                "Everything stored about a student (data subject access)",
                obj({"site": STR, "student_id": STR, "checkins": array(ANY_OBJECT)}),
                roles=ADMIN,
                parameters=_name_params("site", "student"),
            )
        },
        "/api/v1/students/{site}/{student}": {
            "delete": _op(
                "Forget a student entirely",
                obj({"erased": STR, "deleted": {"type": "object", "additionalProperties": INT}}),
                roles=ADMIN,
                parameters=_name_params("site", "student"),
            )
        },
        "/api/v1/checkins/{id}/evidence": {
            "get": _op(
                "A check-in's evidence bundle (signed record, proofs, device keys)",
                ANY_OBJECT,
                parameters=[ID],
                errors=(409,),
            )
        },
        "/api/v1/checkins/{id}/links": {
            "post": _op(
                "A verification link to a check-in's evidence, for a third party",
                obj({"link": obj({"id": INT, "checkin_id": INT, "url": STR, "expires_at": TIME})}),
                roles=("admin", "teacher"),
                ok=201,
                parameters=[ID],
                body=body_schema(
                    {}, {"ttl_days": {"type": "number", "exclusiveMinimum": 0, "maximum": 3650}}
                ),
                body_required=False,
                errors=(409,),
            )
        },
        "/api/v1/links/{id}": {
            "delete": _op(
                "Revoke a verification link",
                obj({"revoked": INT}),
                roles=("admin", "teacher"),
                parameters=[ID],
            )
        },
        "/api/v1/courses/{site}/{course}/history": {
            "get": _op(
                "Every occurrence of the course's sessions in from..to with status counts,"
                " attendance rate and late count",
                obj(
                    {
                        "site": STR,
                        "course": STR,
                        "occurrences": array(
                            obj(
                                {
                                    "session_id": INT,
                                    "room": STR,
                                    "date": {"type": "string", "format": "date"},
                                    "starts_at": TIME,
                                    "ended": BOOL,
                                    "summary": ref("Summary"),
                                    "rate": null(NUM),
                                    "late": INT,
                                }
                            )
                        ),
                    }
                ),
                parameters=[
                    *_name_params("site", "course"),
                    _query("from", TIME_QUERY),
                    _query("to", TIME_QUERY),
                ],
            )
        },
        "/api/v1/imports/{kind}": {
            "post": _op(
                "Import a CSV of students, courses, enrolments or sessions (all rows or none)",
                obj(
                    {
                        "kind": STR,
                        "dry_run": BOOL,
                        "applied": BOOL,
                        "rows": INT,
                        "created": INT,
                        "updated": INT,
                        "unchanged": INT,
                        "pin_will_be_set": INT,
                        "pins": INT,
                        "errors": array(obj({"row": INT, "field": null(STR), "message": STR})),
                    }
                ),
                roles=ADMIN,
                parameters=[
                    _path_param("kind", {"type": "string", "enum": list(csvimport.KINDS)}),
                    _query("dry_run", {"type": "string", "enum": ["true", "false"]}),
                ],
                body={"type": "string"},
                body_media="text/csv",
                errors=(409, 415),
                tag="reports",
            )
        },
        **{
            f"/api/v1/exports/attendance.{suffix}": {
                "get": _op(
                    f"Attendance as {suffix.upper()} with verification links: one session"
                    " occurrence (session_id, date; without date, today's occurrence in the"
                    " session's time zone, else the latest past one), a course (site, course)"
                    " or a student (site, student_id)",
                    schema,
                    roles=("admin", "teacher"),
                    parameters=[
                        _query("session_id", {"type": "integer", "minimum": 1}),
                        _query("date", {"type": "string", "format": "date"}),
                        SITE_QUERY,
                        _query("course", NAME),
                        _query("student_id", NAME),
                    ],
                    media=media,
                    errors=(404,),
                    tag="reports",
                )
            }
            for suffix, media, schema in (
                ("csv", "text/csv", STR),
                ("pdf", "application/pdf", {"type": "string", "format": "binary"}),
            )
        },
        "/api/v1/webhooks": {
            "post": _op(
                "Register a webhook; the answer holds its signing secret, shown only once",
                obj({"webhook": ref("Webhook"), "secret": STR}),
                roles=ADMIN,
                ok=201,
                body=body_schema(
                    {
                        "url": {"type": "string", "format": "uri", "maxLength": 2000},
                        "events": {
                            "type": "array",
                            "minItems": 1,
                            "uniqueItems": True,
                            "items": {"type": "string", "enum": ["checkin", "session_closed"]},
                        },
                    },
                    {"description": {"type": "string", "maxLength": 200}, "site": NAME},
                ),
                errors=(404, 409),
                tag="webhooks",
            ),
            "get": _op(
                "Registered webhooks (never their secrets)",
                obj({"webhooks": array(ref("Webhook"))}),
                roles=("admin", "auditor"),
                tag="webhooks",
            ),
        },
        "/api/v1/webhooks/{id}": {
            "delete": _op(
                "Delete a webhook and its delivery log",
                obj({"deleted": INT}),
                roles=ADMIN,
                parameters=[ID],
                tag="webhooks",
            )
        },
        "/api/v1/webhooks/{id}/deliveries": {
            "get": _op(
                "A webhook's delivery log: attempts, last status or error, next retry",
                obj({"deliveries": array(ref("Delivery")), "next_after": NEXT_AFTER}),
                roles=("admin", "auditor"),
                parameters=[ID, *page],
                tag="webhooks",
            )
        },
    }


@functools.cache
def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "roomproof central",
            "version": "1",
            "description": "Room attendance: check-ins, timetable attendance, devices, evidence"
            " and webhooks. Every error has the body"
            ' {"error": {"code", "message", "details", "request_id"}}.',
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                f"E{code}": {
                    "description": text,
                    "content": {"application/json": {"schema": ref("Error")}},
                }
                for code, text in ERROR_TEXT.items()
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An admin API token: admin, teacher or auditor of one"
                    " site, or an operator of every site",
                }
            },
        },
    }


def routes(app: web.Application) -> None:
    app.router.add_get(PATH, serve)


async def serve(request: web.Request) -> web.Response:
    return web.json_response(document(), headers={"Cache-Control": "public, max-age=300"})
