"""The OpenAPI description against the code: it names exactly the /api/v1 routes the app
registers, and schemathesis, run against a live central (real port, SQLite, admin token),
finds no 5xx, no undocumented status code or media type, no answer outside its schema, no
invalid input accepted, no operation that works without its token and no wrong method
answered but by 405."""

from __future__ import annotations

import asyncio
import datetime
import json
import pathlib
import sys
import time

import pytest

from central import app as app_mod
from central.core import clock as clock_mod
from central.core import settings as settings_mod
from central.domain import timetable
from central.http import openapi
from central.storage import store
from tests.central import conftest

SCHEMATHESIS = pathlib.Path(sys.executable).parent / "schemathesis"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


@pytest.fixture()
def clock() -> clock_mod.SettableClock:
    """Time stands still: no session closes (and no webhook fires) while schemathesis runs."""
    return clock_mod.SettableClock(int(time.time() * 1000))


def registered(tmp_path: pathlib.Path) -> set[tuple[str, str]]:
    app = app_mod.build(settings_mod.CentralSettings(data_dir=tmp_path), with_bridge=False)
    found = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/api/v1/") and route.method in METHODS:
            found.add((route.method, path))
    return found


def described() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in openapi.document()["paths"].items()
        for method in operations
    }


def test_every_api_route_is_described_and_nothing_else(tmp_path: pathlib.Path) -> None:
    routes = registered(tmp_path)
    assert ("POST", "/api/v1/webhooks") in routes and len(routes) > 40
    assert routes - described() == set(), "routes missing from central/http/openapi.py"
    assert described() - routes == set(), "described operations the app does not have"


def test_document_shape() -> None:
    document = openapi.document()
    assert document["openapi"].startswith("3.1")
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation["summary"], where
            codes = set(operation["responses"])
            assert any(c.startswith("2") for c in codes), where
            assert "400" in codes, where
            public = operation["security"] == []
            assert public or {"401", "403"} <= codes, where
            for name in (p["name"] for p in operation["parameters"] if p["in"] == "path"):
                assert "{" + name + "}" in path, where


async def test_schemathesis_against_a_running_central(
    enrolled: tuple[conftest.Central, conftest.ScriptedDevice], tmp_path: pathlib.Path
) -> None:
    central, device = enrolled
    assert SCHEMATHESIS.exists(), f"no {SCHEMATHESIS}: pip install -e '.[test]'"
    status, served = await central.request("GET", openapi.PATH)
    assert status == 200 and served == openapi.document()
    db = central.db  # some data, so that lookups reach the handlers' logic, not only 404
    await central.add_student("s1", "2468")
    await db.add_course(store.Course(central.site, "c1", "Course", "UTC"))
    await db.set_roster(central.site, "c1", ["s1"])
    session = await db.add_session(
        timetable.Session(
            0,
            central.site,
            "c1",
            central.room,
            "UTC",
            datetime.date(2027, 3, 22),
            datetime.time(8, 0),
            datetime.time(9, 0),
            True,
            None,
            5,
            False,
        )
    )
    hook = await db.add_webhook("http://127.0.0.1:9/hook", ("checkin",), "seed", "whsec_x", 0)
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        _known_values(
            {
                "site": central.site,
                "room": central.room,
                "device": device.device,
                "course": "c1",
                "student": "s1",
                "date": "2027-03-22",
            },
            {"^/api/v1/sessions/": session.id, "^/api/v1/webhooks/": hook.id},
        )
    )
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        central.url + openapi.PATH,
        "--header",
        f"Authorization: Bearer {central.admin_token}",
        "--checks",
        "all",  # no 5xx, documented codes and media types, answers as described, bad input
        "--exclude-checks",  # refused, auth enforced, 405 for other methods; but valid-looking
        "positive_data_acceptance",  # input may still break a rule the schema cannot say
        "--max-examples",
        "20",
        "--seed",
        "20261125",
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--exclude-path",
        "/api/v1/events",  # an endless stream
        "--exclude-path",
        "/api/v1/tokens/{id}",  # it would revoke the very token the run uses
        "--request-timeout",
        "10",
        "--no-shrink",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        cwd=tmp_path,  # its cache of crashes (.schemathesis/) stays out of the checkout
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-12000:]
    assert "passed" in text.rsplit("SUMMARY", 1)[-1], text[-3000:]


def _known_values(path_values: dict[str, str], ids: dict[str, int]) -> str:
    """schemathesis.toml: existing names and ids used in 80% of the generated cases, so that
    requests get past the 404 of an unknown resource into the handlers' logic."""
    lines = []
    for name, value in path_values.items():
        lines += [f"[dictionaries.{name}]", f"values = [{json.dumps(value)}]", ""]
    for index, value in enumerate(ids.values()):
        lines += [f"[dictionaries.id{index}]", f"values = [{value}]", ""]
    lines.append("[parameters]")
    for name in path_values:
        lines.append(f'"path.{name}" = {{ dictionary = "{name}", probability = 0.8 }}')
    for index, pattern in enumerate(ids):
        lines += [
            "",
            "[[operations]]",
            f"include-path-regex = {json.dumps(pattern)}",
            f'parameters = {{ "path.id" = {{ dictionary = "id{index}", probability = 0.8 }} }}',
        ]
    return "\n".join(lines) + "\n"


async def test_wrong_method_is_405_and_unknown_path_404(central: conftest.Central) -> None:
    async with central.http.request("TRACE", central.url + "/api/v1/webhooks") as response:
        assert response.status == 405 and response.headers["Allow"] == "GET, HEAD, POST"
        assert (await response.json())["error"]["code"] == "method_not_allowed"
    status, body = await central.request("PATCH", "/api/v1/sessions/1/attendance")
    assert status == 405 and body["error"]["details"] == {"allowed": ["GET", "HEAD"]}
    status, body = await central.request("GET", "/api/v1/no-such-thing")
    assert status == 404 and body["error"]["code"] == "not_found"
