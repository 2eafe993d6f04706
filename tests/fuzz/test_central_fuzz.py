"""Fuzzing a real running central: random and mutated JSON bodies on every write endpoint of
the HTTP API, random and mutated payloads on a device's MQTT topics.

DESIGN §6: bad input never crashes a process and never stores anything; each gets a clear
error or a counted rejection. So every answer must be a 4xx in the common error format (or a
2xx for a body that really is valid), the database must be byte-for-byte unchanged after each
rejected input, and central must still take the device's next genuine proof.

How hypothesis drives an async service: the tests are synchronous; the fixtures start central
on the pytest-asyncio loop and each example runs its requests to completion on that loop with
`run_until_complete` (World.run). This keeps hypothesis's shrinking, so a
failure is reported as a minimal body, and keeps one central per test, which is what makes
the default profile fast enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import pathlib
import sqlite3
import time
import typing
import zoneinfo

import hypothesis
import pytest
from hypothesis import strategies as st

from central.core import clock as clock_mod
from edge_agent.protocol import b64
from edge_agent.protocol import enroll
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken
from edge_agent.protocol import report
from tests.central import conftest as central_conftest
from tests.fuzz import conftest
from tests.fuzz import inputs

ERROR_MEMBERS = {"code", "message", "details", "request_id"}
REJECTION_REASONS = {
    "oversize",
    "malformed",
    "bad_header",
    "schema",
    "topic_mismatch",
    "unknown_device",
    "bad_signature",
    "wrong_room",
    "duplicate",
    "fork",
    "chain_broken",
    "clock",
    "bad_token",
    "retired_key",
    "bad_status",
    "bad_telemetry",
    "unsigned",  # status, telemetry and command results must be signed (F7)
    "stale",
    "key_change_malformed",
    "key_change_topic_mismatch",
    "key_change_bad_signature",
    "key_change_replay",
    "key_change_wrong_room",
    "key_change_stale_seq",
}
LOG_TABLES = ("rejection_counts", "rejection_log")  # MQTT rejections are counted, by design


class InternalError(AssertionError):
    """Central answered 500 (or counted an `internal` rejection): an unhandled exception."""


def snapshot(db_path: pathlib.Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table but the rejection log, read with a second connection."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {
            table: sorted(db.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
            for table in tables
            if table not in LOG_TABLES
        }
    if "sqlite_sequence" in rows:  # AUTOINCREMENT counters, also the rejection log's
        rows["sqlite_sequence"] = [r for r in rows["sqlite_sequence"] if r[0] not in LOG_TABLES]
    return rows


def changed_tables(
    before: dict[str, list[tuple[object, ...]]], after: dict[str, typing.Any]
) -> list[str]:
    return sorted(
        table for table in set(before) | set(after) if before.get(table) != after.get(table)
    )


# -- HTTP ----------------------------------------------------------------------------------
@dataclasses.dataclass
class World:
    """An enrolled device, two students, a course with a session running now, a check-in."""

    central: central_conftest.Central
    device: central_conftest.ScriptedDevice
    loop: asyncio.AbstractEventLoop
    token_url: str
    session_id: int
    date: str
    checkin_id: int

    def run(self, coroutine: typing.Coroutine[typing.Any, typing.Any, typing.Any]) -> typing.Any:
        return self.loop.run_until_complete(coroutine)


@pytest.fixture()
def clock() -> clock_mod.SettableClock:
    """Central's time stands still during a fuzz run: in a long (nightly) run the device would
    otherwise fall silent and get an `offline` alert, a legitimate change of the database."""
    return clock_mod.SettableClock(int(time.time() * 1000))


def _zone_at_noon() -> str:
    """A fixed-offset zone where it is now about noon, so a 00:00-23:59 session is running."""
    offset = 12 - datetime.datetime.now(datetime.UTC).hour
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


@pytest.fixture()
async def world(
    enrolled: tuple[central_conftest.Central, central_conftest.ScriptedDevice],
) -> World:
    central, device = enrolled
    admin = central.admin_token
    for student, pin in (("s1", "4711"), ("s2", "0815")):
        await central.add_student(student, pin)
    zone = _zone_at_noon()
    course = {"site": central.site, "course": "c1", "name": "Course", "timezone": zone}
    assert (await central.request("POST", "/api/v1/courses", course, token=admin))[0] == 201
    roster = f"/api/v1/courses/{central.site}/c1/roster"
    assert (await central.request("PUT", roster, {"students": ["s1"]}, token=admin))[0] == 200
    date = datetime.datetime.now(zoneinfo.ZoneInfo(zone)).date().isoformat()
    session = {
        "site": central.site,
        "course": "c1",
        "room": central.room,
        "first_date": date,
        "start": "00:00",
        "end": "23:59",
        "checkout": True,
    }
    status, body = await central.request("POST", "/api/v1/sessions", session, token=admin)
    assert status == 201, body
    compact = device.next_proof()  # a proof of this very slot, so evidence can be built
    await central.publish(device.topic("proof"), compact)

    async def stored() -> bool:
        return await central.stored_seqs(device.device) == [1, 2]

    await central_conftest.poll(stored, 10, "the second proof")
    slot = proof.decode(compact)[1].slot
    token_url = qrtoken.url(
        central.settings.public_url, central.site, device.device, slot, device.token(slot)
    )
    checkin = {"token": token_url, "student_id": "s1", "pin": "4711"}
    status, body = await central.request("POST", "/api/v1/checkins", checkin)
    assert status == 201, body
    return World(
        central,
        device,
        asyncio.get_running_loop(),
        token_url,
        body["session"]["id"],
        date,
        body["checkin"]["id"],
    )


@dataclasses.dataclass(frozen=True)
class Endpoint:
    method: str
    path: typing.Callable[[World], str]
    genuine: typing.Callable[[World], dict[str, typing.Any]]
    values: dict[str, st.SearchStrategy[typing.Any]]  # field -> interesting values
    student: bool = False  # no bearer token: the student endpoints


NAMES = st.sampled_from(["c1", "c2", "a-101", "s1", "s2", "pi-a101", "-x", "A", "", "a" * 64])
NUMBERS = st.one_of(
    st.integers(),
    st.floats(),
    st.integers(min_value=10**308, max_value=10**400),
    st.sampled_from([0, -1, 1, 5, 240, 241, 3650, 3651, 10_000, 10_001, 2**63, True, False]),
)
TEXTS = st.text(max_size=20) | st.sampled_from(["<script>", "'; DROP TABLE checkins; --", "é"])


def _token_values() -> st.SearchStrategy[typing.Any]:
    sig = "A" * 86
    return st.sampled_from(
        [
            "http://[/c/a/b/1." + sig,
            "/c/x/pi-a101/1." + sig,
            "/c/../../1." + sig,
            "https://h/c/s/d/99999999999999999999." + sig,
        ]
    ) | st.text(max_size=30)


GEO = st.fixed_dictionaries(
    {"consent": st.sampled_from([True, False, "true"])},
    optional={"lat": NUMBERS, "lon": NUMBERS, "accuracy_m": NUMBERS, "x": NUMBERS},
)
STUDENT_VALUES = {
    "token": _token_values(),
    "site": NAMES,
    "room": NAMES,
    "otp": st.text(alphabet="0123456789", min_size=6, max_size=6) | TEXTS,
    "student_id": NAMES,
    "pin": st.sampled_from(["4711", "0815", ""]) | TEXTS,
    "credential": TEXTS,
    "geo": GEO,
}
ENDPOINTS = {
    "checkins": Endpoint(
        "POST",
        lambda w: "/api/v1/checkins",
        lambda w: {"token": w.token_url, "student_id": "s2", "pin": "0815"},
        STUDENT_VALUES,
        student=True,
    ),
    "checkouts": Endpoint(
        "POST",
        lambda w: "/api/v1/checkouts",
        lambda w: {"token": w.token_url, "student_id": "s1", "pin": "4711"},
        STUDENT_VALUES,
        student=True,
    ),
    "courses": Endpoint(
        "POST",
        lambda w: "/api/v1/courses",
        lambda w: {"site": w.central.site, "course": "c2", "name": "Two", "timezone": "UTC"},
        {
            "site": NAMES,
            "course": NAMES,
            "name": TEXTS,
            "timezone": st.sampled_from(["UTC", "Europe/Berlin", "../../etc/passwd", "UTC\x00"])
            | TEXTS,
        },
    ),
    "roster": Endpoint(
        "PUT",
        lambda w: f"/api/v1/courses/{w.central.site}/c1/roster",
        lambda w: {"students": ["s1", "s2"]},
        {"students": st.lists(NAMES | inputs.SCALARS, max_size=4)},
    ),
    "sessions": Endpoint(
        "POST",
        lambda w: "/api/v1/sessions",
        lambda w: {
            "site": w.central.site,
            "course": "c1",
            "room": w.central.room,
            "first_date": "2030-01-07",
            "start": "09:00",
            "end": "10:30",
            "weekly": True,
            "until": "2030-03-25",
            "grace_min": 10,
        },
        {
            "site": NAMES,
            "course": NAMES,
            "room": NAMES,
            "first_date": st.sampled_from(["2030-02-30", "0001-01-01", "9999-12-31", "2030-1-1"])
            | TEXTS,
            "until": st.sampled_from(["2029-01-01", "9999-12-31", None]) | TEXTS,
            "start": st.sampled_from(["24:00", "23:59", "9:00", "09:00:00", "ab:cd"]) | TEXTS,
            "end": st.sampled_from(["00:00", "23:59", "25:61"]) | TEXTS,
            "weekly": st.sampled_from([True, False, 1, "yes"]),
            "grace_min": NUMBERS,
            "checkout": st.sampled_from([True, False, 0, None]),
            "timezone": st.sampled_from(["Etc/GMT+14", "America/New_York", "Mars/Base"]) | TEXTS,
        },
    ),
    "attendance": Endpoint(
        "PUT",
        lambda w: f"/api/v1/sessions/{w.session_id}/attendance/{w.date}/s1",
        lambda w: {"status": "excused", "note": "doctor's note"},
        {
            "status": st.sampled_from(["excused", "present", "late", "absent", "flagged"])
            | inputs.json_values(),
            "note": TEXTS | st.text(min_size=500, max_size=510),
        },
    ),
    "profile": Endpoint(
        "POST",
        lambda w: f"/api/v1/rooms/{w.central.site}/{w.central.room}/profile",
        lambda w: {"action": "confirm", "wifi": ["aa:bb:cc:dd:ee:ff"], "ble": ["ibeacon:x/1/2"]},
        {
            "action": st.sampled_from(["confirm", "relearn", "CONFIRM"]) | inputs.json_values(),
            "learn_proofs": NUMBERS,
            "wifi": st.lists(
                st.sampled_from(["aa:bb:cc:dd:ee:ff", "AA:BB:CC:DD:EE:FF"]) | inputs.SCALARS,
                max_size=3,
            ),
            "ble": st.lists(st.sampled_from(["ibeacon:x/1/2", "x"]) | inputs.SCALARS, max_size=3),
        },
    ),
    "links": Endpoint(
        "POST",
        lambda w: f"/api/v1/checkins/{w.checkin_id}/links",
        lambda w: {"ttl_days": 7},
        {"ttl_days": NUMBERS},
    ),
    "room": Endpoint(
        "PATCH",
        lambda w: f"/api/v1/rooms/{w.central.site}/{w.central.room}",
        lambda w: {"lat": 48.15, "lon": 11.57, "radius_m": 60},
        {"lat": NUMBERS | st.none(), "lon": NUMBERS | st.none(), "radius_m": NUMBERS},
    ),
}


def _bodies(endpoint: Endpoint, genuine: dict[str, typing.Any]) -> st.SearchStrategy[typing.Any]:
    """("json", value) bodies of every kind, and ("raw", bytes) bodies that are not JSON.

    Most bodies are the genuine one with one or two members changed: those get past the
    member checks to the validators and the store, where the interesting failures are."""
    field_values = {
        key: strategy | inputs.json_values(6) for key, strategy in endpoint.values.items()
    }
    fields = st.sampled_from(sorted(field_values))

    def changed(base: dict[str, typing.Any]) -> st.SearchStrategy[dict[str, typing.Any]]:
        return fields.flatmap(lambda key: field_values[key].map(lambda value: {**base, key: value}))

    json_body = st.one_of(
        inputs.json_values(),
        inputs.objects_with(endpoint.values),
        st.fixed_dictionaries({}, optional=field_values),
        changed(genuine),
        changed(genuine),
        changed(genuine).flatmap(changed),
        st.sampled_from(sorted(genuine)).map(
            lambda key: {k: v for k, v in genuine.items() if k != key}
        ),
        st.text(max_size=8).map(lambda key: {**genuine, key: 1}),
    )
    raw = inputs.mutations(json.dumps(genuine).encode(), max_edits=3) | st.binary(max_size=60)
    return json_body.map(lambda body: ("json", body)) | raw.map(lambda data: ("raw", data))


def _send(world: World, endpoint: Endpoint, body: tuple[str, typing.Any]) -> tuple[int, typing.Any]:
    central = world.central
    token = None if endpoint.student else central.admin_token
    kind, value = body
    if kind == "json":
        return world.run(central.request(endpoint.method, endpoint.path(world), value, token=token))
    headers = {"Content-Type": "application/json"}
    return world.run(
        central.request(
            endpoint.method, endpoint.path(world), None, token=token, data=value, headers=headers
        )
    )


def check_error(status: int, reply: typing.Any, what: str) -> None:
    if status >= 500 and not (status == 503 and _code(reply) == "device_not_ready"):
        raise InternalError(f"{status} for {what}: {reply!r}"[:2000])
    assert 400 <= status < 500 or status == 503, f"{status} for {what}"
    assert isinstance(reply, dict) and set(reply) == {"error"}, f"{status} {reply!r} for {what}"
    error = reply["error"]
    assert isinstance(error, dict) and set(error) == ERROR_MEMBERS, reply
    assert isinstance(error["code"], str) and error["code"], reply
    assert isinstance(error["message"], str) and isinstance(error["details"], dict), reply
    assert isinstance(error["request_id"], str) and error["request_id"], reply


def _code(reply: typing.Any) -> object:
    return reply.get("error", {}).get("code") if isinstance(reply, dict) else None


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_http_bodies(world: World, name: str) -> None:
    endpoint = ENDPOINTS[name]
    db_path = world.central.settings.db_path
    state = {"before": snapshot(db_path)}

    def check(body: tuple[str, typing.Any]) -> None:
        status, reply = _send(world, endpoint, body)
        after = snapshot(db_path)
        if 200 <= status < 300:
            state["before"] = after  # a genuinely valid body: its change is the point
            return
        check_error(status, reply, f"{endpoint.method} {endpoint.path(world)} {body!r}")
        changed = changed_tables(state["before"], after)
        assert not changed, f"rejected {body!r} ({status} {_code(reply)}) changed {changed}"

    fuzz = hypothesis.given(_bodies(endpoint, endpoint.genuine(world)))(check)
    hypothesis.settings(max_examples=conftest.scaled(40))(fuzz)()
    genuine_status, reply = _send(world, endpoint, ("json", endpoint.genuine(world)))
    assert genuine_status < 500, reply  # still answering after the fuzz


_GEO = {"consent": True, "lat": 10**400, "lon": 0, "accuracy_m": 0}
_BAD_URL = "http://[/c/a/b/1." + "A" * 86


@pytest.mark.parametrize(
    ("name", "body"),
    [
        pytest.param(
            "checkins",
            {"token": "x", "student_id": "s1", "pin": "4711", "geo": _GEO},
            id="checkins-geo",
        ),
        pytest.param(
            "checkouts",
            {"token": "x", "student_id": "s1", "pin": "4711", "geo": _GEO},
            id="checkouts-geo",
        ),
        pytest.param(
            "checkins",
            {"token": _BAD_URL, "student_id": "s1", "pin": "4711"},
            id="checkins-url",
        ),
        pytest.param(
            "checkouts",
            {"token": _BAD_URL, "student_id": "s1", "pin": "4711"},
            id="checkouts-url",
        ),
        pytest.param(
            "attendance",
            {"status": []},
            id="attendance-status",
        ),
    ],
)
def test_http_former_bugs(world: World, name: str, body: dict[str, typing.Any]) -> None:
    before = snapshot(world.central.settings.db_path)
    status, reply = _send(world, ENDPOINTS[name], ("json", body))
    check_error(status, reply, f"{name} {body!r}")
    assert not changed_tables(before, snapshot(world.central.settings.db_path))


def test_http_deeply_nested_bodies(world: World) -> None:
    body = inputs.nested(3000).encode()
    failures = []
    for name, endpoint in ENDPOINTS.items():
        status, reply = _send(world, endpoint, ("raw", body))
        try:
            check_error(status, reply, name)
        except InternalError as exc:
            failures.append(f"{name}: {exc}"[:200])
    if failures:
        raise InternalError("; ".join(failures))


# -- MQTT ----------------------------------------------------------------------------------
def _payloads(
    world: World, pending: str, code_request: bytes
) -> st.SearchStrategy[tuple[str, bytes]]:
    device = world.device
    stored = device.sent[0]
    forged = proof.sign(proof.decode(pending)[1], keys.SigningKey.generate())
    proof_payloads = st.one_of(
        inputs.mutations(pending.encode(), max_edits=4),
        inputs.mutations(pending.encode(), ascii_only=True, max_edits=4),
        inputs.mutations(stored.encode(), max_edits=2),
        st.just(stored.encode()),  # a redelivery: counted as `duplicate`, stored once
        st.just(forged.encode()),
        st.binary(max_size=200),
        inputs.json_values().map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda body: jws.sign(
                json.dumps(body).encode(), device.signing, device.device, proof.TYP
            ),
            inputs.objects_with(json.loads(jws.parse(pending, 1 << 16).payload)),
        ).map(str.encode),
        st.binary(min_size=proof.MAX_BYTES + 1, max_size=proof.MAX_BYTES + 2),
    )
    enroll_payloads = st.one_of(
        inputs.mutations(code_request, max_edits=4),
        st.just(code_request),
        inputs.objects_with(json.loads(code_request)).map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=100),
    )
    depth = st.dictionaries(st.sampled_from(["proof", "telemetry"]) | st.text(max_size=4), NUMBERS)
    telemetry_payloads = st.one_of(
        st.binary(max_size=50),
        inputs.objects_with(["outbox_depth", "uptime_s", "sensors", "clock"]).map(_dumps),
        st.fixed_dictionaries(
            {"outbox_depth": depth | inputs.json_values(4)},
            optional={"uptime_s": NUMBERS, "sensors": inputs.json_values(4)},
        ).map(_dumps),
    )
    status_payloads = st.one_of(
        st.binary(max_size=20), st.sampled_from([b"ONLINE", b"online ", b"offline\x00", b""])
    )
    return st.one_of(
        st.tuples(st.just("proof"), proof_payloads),
        st.tuples(st.just("enroll"), enroll_payloads),
        st.tuples(
            st.just("status"), status_payloads.filter(lambda p: p not in (b"online", b"offline"))
        ),
        st.tuples(st.just("telemetry"), telemetry_payloads),
    )


def _dumps(value: typing.Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity included, as Python's json reads them


def _counted(world: World, kind: str, payload: bytes) -> set[int]:
    """How many rejections central may count for this message."""
    if kind != "enroll":  # status and telemetry: none is signed by the device
        return {1}
    try:
        request = enroll.parse_request(payload)
    except enroll.EnrollError:
        return {1}
    same = (request.site, request.device, request.ed25519, request.x25519) == (
        world.device.site,
        world.device.device,
        world.device.signing.public,
        world.device.agreement.public,
    )
    return {0} if same else {1}  # the bound device asking again gets its answer again


def test_mqtt_payloads(world: World) -> None:
    central, device = world.central, world.device
    db_path = central.settings.db_path
    pending = device.next_proof()  # the next genuine proof, held back until the end
    code_request = enroll.make_request(
        b64.encode(bytes(32)),
        device.site,
        device.room,
        device.device,
        device.signing.public,
        device.agreement.public,
    )
    before = snapshot(db_path)
    seen = {"counts": world.run(central.rejections())}

    def check(message: tuple[str, bytes]) -> None:
        kind, payload = message
        previous = seen["counts"]
        world.run(central.publish(device.topic(kind), payload))
        # Central handles one message at a time, in order: once this barrier is counted
        # (unsigned), the message before it has been handled.
        world.run(central.publish(device.topic("status"), b"barrier"))
        unsigned = kind in ("status", "telemetry") and not payload.startswith(b"eyJ")
        barrier = previous.get("unsigned", 0) + 1 + unsigned

        async def counted() -> dict[str, int]:
            counts = await central.rejections()
            return counts if counts.get("unsigned", 0) >= barrier else {}

        counts = world.run(central_conftest.poll(counted, 10, f"handling of {message!r}"))
        seen["counts"] = counts
        if counts.get("internal", 0) > previous.get("internal", 0):
            raise InternalError(f"{kind} {payload!r} counted as internal: {counts}")
        added = sum(counts.values()) - sum(previous.values()) - 1
        assert added in _counted(world, kind, payload), (message, previous, counts)
        unknown = {
            r
            for r in counts
            if r not in REJECTION_REASONS | {"internal"} and not r.startswith("enroll_")
        }
        assert not unknown, (message, counts)
        changed = changed_tables(before, snapshot(db_path))
        assert not changed, f"{kind} {payload!r} changed {changed}"

    fuzz = hypothesis.given(_payloads(world, pending, code_request))(check)
    hypothesis.settings(max_examples=conftest.scaled(60))(fuzz)()

    world.run(central.publish(device.topic("proof"), pending))

    async def accepted() -> bool:
        return await central.stored_seqs(device.device) == [1, 2, 3]

    world.run(central_conftest.poll(accepted, 10, "the genuine proof after the fuzz"))


def test_mqtt_deeply_nested_payloads(world: World) -> None:
    central, device = world.central, world.device
    header = b64.encode(inputs.nested(3000).encode())
    messages = [
        ("proof", f"{header}.{b64.encode(b'{}')}.{b64.encode(bytes(64))}".encode()),
        ("enroll", inputs.nested(2000).encode()),
        ("telemetry", inputs.nested(3000).encode()),
    ]
    total = sum(world.run(central.rejections()).values()) + len(messages)
    for kind, payload in messages:
        world.run(central.publish(device.topic(kind), payload))

    async def counted() -> dict[str, int]:
        counts = await central.rejections()
        return counts if sum(counts.values()) >= total else {}

    counts = world.run(central_conftest.poll(counted, 10, "both rejections"))
    if counts.get("internal"):
        raise InternalError(f"counted as internal: {counts}")
    assert all(counts.get(r) for r in ("bad_header", "enroll_malformed", "unsigned")), counts


def test_mqtt_former_bugs(world: World) -> None:
    central, device = world.central, world.device
    payloads = [b'{"outbox_depth": {"proof": 1e400}}', _dumps({"outbox_depth": {"proof": 10**400}})]
    # The same, signed by the device: the schema refuses them.
    payloads += [
        jws.sign(body, device.signing, device.device, report.TELEMETRY).encode()
        for body in payloads
    ]
    before = world.run(central.rejections())
    total = sum(before.values()) + len(payloads)
    for payload in payloads:
        world.run(central.publish(device.topic("telemetry"), payload))

    async def counted() -> dict[str, int]:
        counts = await central.rejections()
        return counts if sum(counts.values()) >= total else {}

    counts = world.run(central_conftest.poll(counted, 10, "the rejections"))
    if counts.get("internal"):
        raise InternalError(f"counted as internal: {counts}")
    assert counts.get("unsigned", 0) - before.get("unsigned", 0) == 2, counts
    assert counts.get("schema", 0) - before.get("schema", 0) == 2, counts
