"""The dashboard's page and files (strict CSP, no inline script), the per-course history its
charts read (rates, late counts, teacher scope), and the student pages' language choice."""

from __future__ import annotations

import datetime
import json
import re

from central.core import i18n
from central.http import auth
from tests.central import conftest


async def test_dashboard_page_and_files_are_served_with_a_strict_policy(
    central: conftest.Central,
) -> None:
    async with central.http.get(central.url + "/dashboard") as response:
        page = await response.text()
        policy = response.headers["Content-Security-Policy"]
    assert response.status == 200
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page) is None  # no inline script
    for name, kind in (
        ("dashboard.js", "text/javascript"),
        ("dashboard-api.js", "text/javascript"),
        ("dashboard-charts.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("checkin.js", "text/javascript"),
    ):
        async with central.http.get(f"{central.url}/static/{name}") as response:
            assert response.status == 200 and response.content_type == kind, name
            assert "cdn" not in (await response.text()).lower()
    async with central.http.get(central.url + "/static/nothing.js") as response:
        assert response.status == 404


async def test_student_pages_follow_accept_language(central: conftest.Central) -> None:
    for header, lang, label in (
        ("de-DE,de;q=0.9,en;q=0.5", "de", "Matrikelnummer"),
        ("fr-FR, en;q=0.3", "en", "Student id"),
        ("de;q=0, en", "en", "Student id"),
    ):
        async with central.http.get(
            central.url + "/otp", headers={"Accept-Language": header}
        ) as response:
            page = await response.text()
        assert response.headers["Content-Language"] == lang
        assert f'<html lang="{lang}">' in page and label in page
        data = json.loads(re.search(r'id="page-data">(.*?)</script>', page).group(1))
        assert data["strings"] == i18n.catalogs()[lang] and data["remembered"] is False
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert set(i18n.catalogs()["de"]) == set(i18n.catalogs()["en"])


async def test_course_history_counts_rates_and_late_arrivals(central: conftest.Central) -> None:
    site, token = central.site, central.admin_token
    for student in ("s1", "s2", "s3"):
        await central.add_student(student, "1234")
    for course in ("cs1", "other"):
        status, body = await central.request(
            "POST", "/api/v1/courses", {"site": site, "course": course, "name": course}, token
        )
        assert status == 201, body
    status, _ = await central.request(
        "PUT", f"/api/v1/courses/{site}/cs1/roster", {"students": ["s1", "s2", "s3"]}, token
    )
    assert status == 200
    today = datetime.datetime.now(datetime.UTC).date()
    first = today - datetime.timedelta(days=14)
    status, body = await central.request(
        "POST",
        "/api/v1/sessions",
        {
            "site": site,
            "course": "cs1",
            "room": central.room,
            "first_date": first.isoformat(),
            "weekly": True,
            "until": (today - datetime.timedelta(days=1)).isoformat(),
            "start": "09:00",
            "end": "10:00",
        },
        token,
    )
    assert status == 201, body
    session = body["session"]["id"]
    # Meeting 1: s1 late, s2 excused, s3 absent. Meeting 2: s1 and s2 present, s3 late.
    marks = {
        first: {"s1": "late", "s2": "excused"},
        first + datetime.timedelta(days=7): {"s1": "present", "s2": "present", "s3": "late"},
    }
    for date, statuses in marks.items():
        for student, mark in statuses.items():
            status, body = await central.request(
                "PUT",
                f"/api/v1/sessions/{session}/attendance/{date}/{student}",
                {"status": mark},
                token,
            )
            assert status == 200, body

    status, body = await central.request("GET", f"/api/v1/courses/{site}/cs1/history", None, token)
    assert status == 200, body
    rows = body["occurrences"]
    assert [r["date"] for r in rows] == [d.isoformat() for d in marks]
    assert rows[0]["summary"]["absent"] == 1 and rows[0]["late"] == 1
    assert rows[0]["rate"] == 0.5  # s1 of s1 and s3 (s2 excused)
    assert rows[1]["rate"] == 1.0 and rows[1]["late"] == 1
    since = (first + datetime.timedelta(days=1)).isoformat() + "T00:00:00Z"
    status, body = await central.request(
        "GET", f"/api/v1/courses/{site}/cs1/history?from={since}", None, token
    )
    assert status == 200 and [r["date"] for r in body["occurrences"]] == [rows[1]["date"]]

    teacher = auth.new_token()
    await central.db.add_admin_token(
        auth.token_hash(teacher), "teacher", "t", 1, ((site, "other"),), site
    )
    status, body = await central.request(
        "GET", f"/api/v1/courses/{site}/cs1/history", None, teacher
    )
    assert status == 403 and body["error"]["code"] == "not_your_course"
    status, body = await central.request(
        "GET", f"/api/v1/courses/{site}/other/history", None, teacher
    )
    assert status == 200 and body["occurrences"] == []
    status, body = await central.request("GET", f"/api/v1/courses/{site}/cs1/history")
    assert status == 401
    status, body = await central.request("GET", f"/api/v1/courses/{site}/nope/history", None, token)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await central.request(
        "GET", f"/api/v1/courses/{site}/cs1/history?from=2020-01-01T00:00:00Z", None, token
    )
    assert status == 400 and body["error"]["code"] == "invalid_request"
