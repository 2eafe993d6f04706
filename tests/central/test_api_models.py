"""The API's models against a live central: every JSON answer of a populated central (a
check-in in a running session, an alert, a chain event, a webhook with a delivery, a link)
matches the schema the OpenAPI document gives for it, item by item, times as RFC 3339; bad
input is refused in the one error format naming the field; and the query types keep
central.params' strict rules (ASCII digits only, RFC 3339 with a timezone). On SQLite and on
PostgreSQL."""

from __future__ import annotations

import collections.abc
import datetime
import time
import typing
import urllib.parse

import hypothesis
import jsonschema_rs
import pytest
from aiohttp import test_utils
from aiohttp import web
from hypothesis import strategies as st

from central.core import clock as clock_mod
from central.core import errors
from central.core import params
from central.domain import timetable
from central.http import openapi
from central.http.apimodels import parse
from central.http.apimodels import queries
from central.storage import store
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from tests.central import conftest
from tests.stores import pg

PIN = "246813"
SKIPPED = {
    "/api/v1/events",  # an endless stream (text/event-stream)
    "/api/v1/exports/attendance.csv",  # files, not JSON
    "/api/v1/exports/attendance.pdf",
}


@pytest.fixture(params=["sqlite", "postgres"])
async def central_overrides(
    request: pytest.FixtureRequest,
) -> collections.abc.AsyncIterator[dict[str, typing.Any]]:
    """The in-process central on each store: the answers are the models', whichever store."""
    if request.param == "sqlite":
        yield {}
        return
    async with pg.fresh_database() as dsn:
        yield {"database_url": dsn}


@pytest.fixture()
def clock() -> clock_mod.SettableClock:
    """Central's clock stands at the real time, so that proofs made now are fresh."""
    return clock_mod.SettableClock(int(time.time() * 1000))


def validator(document: dict[str, typing.Any], schema: dict[str, typing.Any]) -> typing.Any:
    """A JSON Schema 2020-12 validator of `schema` whose $refs resolve in the document."""
    return jsonschema_rs.Draft202012Validator(
        {**schema, "components": document["components"]}, validate_formats=True
    )


async def populate(
    central: conftest.Central, device: conftest.ScriptedDevice, now_ms: int
) -> dict[str, typing.Any]:
    """A course with a session running now in the device's room, a check-in in it, a
    verification link, an alert, a chain event and a webhook with a queued delivery."""
    db = central.db
    await central.add_student("s1", PIN)
    await db.add_course(store.Course(central.site, "c1", "Course", "UTC"))
    await db.set_roster(central.site, "c1", ["s1"])
    today = datetime.datetime.fromtimestamp(now_ms / 1000, datetime.UTC).date()
    session = await db.add_session(
        timetable.Session(
            0,
            central.site,
            "c1",
            central.room,
            "UTC",
            today,
            datetime.time(0, 0),
            datetime.time(23, 59),
            False,
            None,
            5,
            False,
        )
    )
    await central.publish(device.topic("proof"), device.next_proof())

    async def stored() -> bool:
        return await db.get_proof(device.site, device.device, device.seq) is not None

    await conftest.poll(stored, 10, "the proof of this slot to be stored")
    slot = slots.slot_of(int(time.time() * 1000), conftest.SLOT_S)
    url = qrtoken.url(central.url, device.site, device.device, slot, device.token(slot))
    status, checkin = await central.request(
        "POST", "/api/v1/checkins", {"token": url, "student_id": "s1", "pin": PIN}
    )
    assert status == 201, checkin
    status, link = await central.request(
        "POST",
        f"/api/v1/checkins/{checkin['checkin']['id']}/links",
        {"ttl_days": 1.5},
        token=central.admin_token,
    )
    assert status in (201, 409), link  # 409: the evidence is still pending
    await db.raise_alert(central.site, device.device, "clock", "off by 9 s", now_ms)
    await db.add_chain_event(central.site, device.device, "gap", 7, 9, "", now_ms)
    await db.count_rejection("schema", device.topic("proof"), 17, now_ms)
    hook = await db.add_webhook(
        "http://127.0.0.1:9/hook", ("checkin",), "seed", "whsec_x", 0, central.site
    )
    queued = await db.enqueue_webhook_event("e1", "checkin", "{}", now_ms, central.site)
    assert queued == 1
    return {
        "site": central.site,
        "room": central.room,
        "device": device.device,
        "course": "c1",
        "student": "s1",
        "date": today.isoformat(),
        "id": {"sessions": session.id, "checkins": checkin["checkin"]["id"], "webhooks": hook.id},
        "checkin": checkin,
    }


async def test_every_answer_matches_its_documented_schema(
    enrolled: tuple[conftest.Central, conftest.ScriptedDevice], clock: clock_mod.SettableClock
) -> None:
    central, device = enrolled
    document = openapi.document()
    known = await populate(central, device, clock.now_ms())
    checkin_answer = validator(
        document,
        document["paths"]["/api/v1/checkins"]["post"]["responses"]["201"]["content"][
            "application/json"
        ]["schema"],
    )
    checkin_answer.validate(known["checkin"])
    assert "session" in known["checkin"], "the check-in fell in the session running now"
    items = 0
    checked = []
    for path, operations in document["paths"].items():
        get = operations.get("get")
        if get is None or path in SKIPPED:
            continue
        url = path
        for param in get["parameters"]:
            if param["in"] == "path":
                name = param["name"]
                value = known["id"][path.split("/")[3]] if name == "id" else known[name]
                url = url.replace("{" + name + "}", str(value))
        query = {
            p["name"]: known[p["name"]]
            for p in get["parameters"]
            if p["in"] == "query" and p["name"] in ("device", "date") and p.get("required")
        }
        if path == "/api/v1/sessions/{id}/attendance":
            query["date"] = known["date"]
        if query:
            url += "?" + urllib.parse.urlencode(query)
        status, body = await central.request("GET", url, token=central.admin_token)
        if path == "/api/v1/checkins/{id}/evidence" and status == 409:
            continue  # the record is countersigned once its slot's proofs are in
        assert status == 200, (url, body)
        schema = get["responses"]["200"]["content"]["application/json"]["schema"]
        problems = [str(e) for e in validator(document, schema).iter_errors(body)]
        assert not problems, (url, problems[:5], body)
        items += sum(len(v) for v in body.values() if isinstance(v, list))
        checked.append(path)
    assert len(checked) >= 20, checked
    for listed in (
        "/api/v1/alerts",
        "/api/v1/chain-events",
        "/api/v1/checkins",
        "/api/v1/rejections",
        "/api/v1/webhooks/{id}/deliveries",
        "/api/v1/sessions/{id}/attendance",
        "/api/v1/students/{site}/{student}/attendance",
    ):
        assert listed in checked, listed
    assert items >= 20, items  # the lists held items, so their item schemas were checked


async def test_times_are_rfc3339_and_optional_parts_are_left_out(
    enrolled: tuple[conftest.Central, conftest.ScriptedDevice], clock: clock_mod.SettableClock
) -> None:
    central, device = enrolled
    known = await populate(central, device, clock.now_ms())
    checkin = known["checkin"]
    assert set(checkin) == {"checkin", "session", "credential"}  # a first, PIN check-in
    row = checkin["checkin"]
    assert row["created_at"].endswith("+00:00") and "." in row["created_at"]
    assert row["checked_out_at"] is None and row["duration_s"] is None  # nulls stay
    status, listed = await central.request(
        "GET", "/api/v1/checkins?limit=1", token=central.admin_token
    )
    assert status == 200 and listed["checkins"] == [row]
    assert listed["next_after"] == row["id"]  # a full page: ask again after it
    status, rooms = await central.request("GET", "/api/v1/rooms", token=central.admin_token)
    assert status == 200 and "profile" in rooms["rooms"][0]
    status, patched = await central.request(
        "PATCH",
        f"/api/v1/rooms/{central.site}/{central.room}",
        {"radius_m": 75},
        token=central.admin_token,
    )
    assert status == 200 and patched["room"]["radius_m"] == 75.0
    assert "profile" not in patched["room"]  # as before: the PATCH answers the room alone


BAD = [
    ("POST", "/api/v1/checkins", {"token": "x", "student_id": "s1", "pin": 1234}, "pin"),
    ("POST", "/api/v1/checkins", {"token": "x" * 2049, "student_id": "s", "pin": "1"}, "token"),
    (
        "POST",
        "/api/v1/checkins",
        {"token": "x", "student_id": "s1", "pin": "1", "geo": {"lat": 1, "lon": 2}},
        "geo",
    ),
    ("PATCH", "/api/v1/rooms/{site}/{room}", {"radius_m": True}, "radius_m"),
    ("PATCH", "/api/v1/rooms/{site}/{room}", {"lat": 91, "lon": 0}, "lat"),
    ("POST", "/api/v1/rooms/{site}/{room}/profile", {"action": "relearn", "wifi": []}, "wifi"),
    (
        "POST",
        "/api/v1/rooms/{site}/{room}/profile",
        {"action": "confirm", "learn_proofs": 0},
        "learn_proofs",
    ),
    ("POST", "/api/v1/courses", {"site": "{site}", "course": "C 1"}, "course"),
    ("POST", "/api/v1/courses", {"site": "{site}", "course": "c9", "name": "a\x01"}, "name"),
    (
        "POST",
        "/api/v1/sessions",
        {
            "site": "{site}",
            "course": "c1",
            "room": "{room}",
            "first_date": "2027-03-22",
            "start": "09:00",
            "end": "10:00",
            "grace_min": "5",
        },
        "grace_min",
    ),
    (
        "POST",
        "/api/v1/webhooks",
        {"url": "https://x.example/h", "events": ["checkin"], "site": 5},
        "site",
    ),
    ("GET", "/api/v1/alerts?kind=meteor", None, "kind"),
    ("GET", "/api/v1/alerts?open=maybe", None, "open"),
    ("GET", "/api/v1/checkins?since=2027-03-22T08:00:00", None, "since"),
    ("GET", "/api/v1/audit?after=-1", None, "after"),
]


async def test_bad_input_is_one_error_naming_the_field(central: conftest.Central) -> None:
    for method, path, body, field in BAD:
        path = path.replace("{site}", central.site).replace("{room}", central.room)
        if isinstance(body, dict) and body.get("site") == "{site}":
            body = {**body, "site": central.site}
        if isinstance(body, dict) and body.get("room") == "{room}":
            body = {**body, "room": central.room}
        status, reply = await central.request(method, path, body, token=central.admin_token)
        where = f"{method} {path} {body}"
        assert status == 400, (where, reply)
        assert set(reply) == {"error"} and set(reply["error"]) == {
            "code",
            "message",
            "details",
            "request_id",
        }, where
        assert reply["error"]["code"] == "invalid_request", (where, reply)
        assert reply["error"]["details"].get("field") == field, (where, reply)
        assert field in reply["error"]["message"] or field == "geo", (where, reply)
    status, reply = await central.request(
        "POST",
        "/api/v1/courses",
        {"site": central.site, "course": "c9", "x": 1, "y": 2},
        token=central.admin_token,
    )
    assert status == 400 and reply["error"]["details"] == {"fields": ["x", "y"]}, reply


def _request(query: dict[str, str]) -> web.Request:
    return test_utils.make_mocked_request("GET", "/x?" + urllib.parse.urlencode(query))


RAW = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=30),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.datetimes(timezones=st.timezones()).map(datetime.datetime.isoformat),
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(RAW)
def test_query_models_keep_the_strict_rules_of_params(raw: str) -> None:
    """The models accept exactly what central.params accepts, with the same value."""
    since, limit = _request({"since": raw}), _request({"limit": raw})
    for read_model, read_params in (
        (
            lambda: parse.query(since, queries.Checkins).since,
            lambda: params.time_param(since, "since"),
        ),
        (
            lambda: parse.query(limit, queries.Page).limit,
            lambda: params.int_param(limit, "limit", 100, 1, 1000),
        ),
    ):
        try:
            expected: typing.Any = read_params()
        except errors.ApiError as exc:
            expected = (exc.status, exc.code, exc.message, exc.details)
        try:
            found: typing.Any = read_model()
        except errors.ApiError as exc:
            found = (exc.status, exc.code, exc.message, exc.details)
        assert found == expected
