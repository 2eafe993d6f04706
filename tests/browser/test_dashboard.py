"""The admin dashboard in a real browser against a real central and agent: live device list
and map, session attendance with an evidence download, history charts, the activity log's
search and filter, and a roster import (dry run first) followed by the CSV export."""

from __future__ import annotations

import csv
import datetime
import json
import pathlib
import zoneinfo

import pytest
from playwright import sync_api
from playwright.sync_api import expect

from tests import system
from tests.browser import conftest


def check_in(room: conftest.Room, student: str) -> int:
    """A phone checks in with the QR on the room's screen (plain HTTP, no browser needed)."""
    url = room.qr() or room.fresh_qr()
    status, body, _ = system.Http(room.url).request(
        "POST",
        "/api/v1/checkins",
        {"token": url, "student_id": student, "pin": conftest.STUDENTS[student]},
        # the browser id the check-in page gives each phone (without it: `no_browser_id`)
        headers={"Cookie": f"roomproof_browser=phone-of-{student}-0123456789abcdef"},
    )
    assert status == 201, body
    return int(body["checkin"]["id"])


def test_devices_view_shows_the_agent_and_the_map(
    room: conftest.Room, dashboard: sync_api.Page
) -> None:
    row = dashboard.locator('#device-table tr[data-device="campus/pi-a101"]')
    expect(row.locator(".status")).to_contain_text("online")
    expect(row.locator(".verdict")).not_to_contain_text("none yet")
    expect(row.locator(".last-proof")).not_to_have_text("–")
    # Two rooms have coordinates; the one with the device has none and stays off the map.
    expect(dashboard.locator("#map svg .room-dot")).to_have_count(2)
    # Proofs arrive every slot: the row follows the stream without a reload.
    before = row.locator(".last-proof").inner_text()
    expect(row.locator(".last-proof")).not_to_have_text(before, timeout=3 * conftest.SLOT_S * 1000)
    conftest.screenshot(dashboard, "dashboard-devices")


def test_attendance_history_and_activity(
    room: conftest.Room, dashboard: sync_api.Page, tmp_path: pathlib.Path
) -> None:
    session_id = room.add_course_now()
    checkin_id = check_in(room, "s3")

    dashboard.get_by_role("link", name="Sessions").click()
    dashboard.get_by_label("Session", exact=True).select_option(str(session_id))
    dashboard.get_by_role("button", name="Show", exact=True).click()
    row = dashboard.locator('#session-table tr[data-student="s3"]')
    expect(row).to_contain_text("present")
    with dashboard.expect_download() as download:
        row.get_by_role("button", name="Evidence").click()
    bundle = json.loads(pathlib.Path(download.value.path()).read_text())
    assert bundle["type"] == "roomproof-evidence/v1"
    assert bundle == room.api("GET", f"/api/v1/checkins/{checkin_id}/evidence")

    dashboard.get_by_role("link", name="History").click()
    dashboard.get_by_label("Course", exact=True).select_option("campus/cs101")
    dashboard.get_by_role("button", name="Show course").click()
    expect(dashboard.locator("#chart-rate svg circle.mark")).to_have_count(5)  # 4 past + today
    expect(dashboard.locator("#chart-late svg rect.mark")).not_to_have_count(0)
    expect(dashboard.locator("#history-table tbody")).to_contain_text("present")
    expect(dashboard.locator("#history-table tbody")).to_contain_text("3 absent")
    conftest.screenshot(dashboard, "history-charts")
    dashboard.get_by_label("Student id", exact=True).fill("s3")
    dashboard.get_by_role("button", name="Show student").click()
    expect(dashboard.locator("#history-title")).to_have_text("Student campus/s3")
    expect(dashboard.locator("#history-table tbody")).to_contain_text("present")

    dashboard.get_by_role("link", name="Activity").click()
    activity = dashboard.locator("#activity")
    expect(dashboard.locator("#activity-table tbody tr").first).to_be_visible()
    audit = room.api("GET", "/api/v1/audit?limit=1000")["audit"]
    added = sum(1 for entry in audit if entry["action"] == "session_add")
    assert added >= 2
    activity.get_by_label("Kind", exact=True).select_option("session_add")
    expect(dashboard.locator("#activity-table tbody tr")).to_have_count(added)
    activity.get_by_label("Kind", exact=True).select_option("")
    activity.get_by_label("Search", exact=True).fill("no such entry anywhere")
    expect(dashboard.locator("#activity-table tbody tr")).to_have_count(0)
    activity.get_by_label("Log", exact=True).select_option("checkins")
    activity.get_by_label("Search", exact=True).fill("s3 in campus")
    expect(dashboard.locator("#activity-table tbody tr").first).to_contain_text("s3")


@pytest.mark.parametrize("direction", ["browser_ahead", "browser_behind"])
def test_session_view_opens_on_the_courses_date(
    room: conftest.Room, browser: sync_api.Browser, direction: conftest.Direction
) -> None:
    """A viewer whose browser is already on the next day (or still on the previous one) than
    the course: the Sessions view opens on the course's meeting, says which zone its dates are
    in, and a day the course does not meet on offers the nearest dates it does."""
    utc = datetime.datetime.now(datetime.UTC)
    course_zone, browser_zone = conftest.zones_apart(utc, direction)
    course = f"tz-{direction.removeprefix('browser_')}"
    session_id, course_date = room.add_course(course, course_zone, "b-203", utc)
    browser_date = utc.astimezone(zoneinfo.ZoneInfo(browser_zone)).date().isoformat()
    assert browser_date != course_date

    with conftest.open_dashboard(browser, room.url, room.token, browser_zone, "sessions") as page:
        view = page.locator("#sessions")
        date = view.get_by_label("Date", exact=True)
        view.get_by_label("Session", exact=True).select_option(str(session_id))
        expect(date).to_have_value(course_date)
        expect(page.locator("#session-zone")).to_contain_text(course_zone)
        for student in sorted(conftest.STUDENTS):
            row = page.locator(f'#session-table tr[data-student="{student}"]')
            expect(row).to_contain_text("pending")
        expect(page.locator("#error")).to_be_hidden()
        conftest.screenshot(page, f"dashboard-session-{direction}")

        # The browser's own date: not a meeting; the nearest one is offered and works.
        date.fill(browser_date)
        view.get_by_role("button", name="Show", exact=True).click()
        expect(page.locator("#error")).to_contain_text(f"does not meet on {browser_date}")
        expect(page.locator("#session-table tbody tr")).to_have_count(0)
        page.locator("#session-summary").get_by_role("button", name=course_date).click()
        expect(date).to_have_value(course_date)
        expect(page.locator("#session-table tbody tr")).to_have_count(len(conftest.STUDENTS))
        expect(page.locator("#error")).to_be_hidden()


def test_roster_import_then_csv_export(
    room: conftest.Room, dashboard: sync_api.Page, tmp_path: pathlib.Path
) -> None:
    room.add_course_now()
    students = tmp_path / "students.csv"
    students.write_text("site,student_id,pin\ncampus,s4,246810\ncampus,s5,135790\n")
    roster = tmp_path / "roster.csv"
    roster.write_text("site,course,student_id\ncampus,cs101,s1\ncampus,cs101,nobody\n")

    dashboard.get_by_role("link", name="Import & export").click()
    form = dashboard.locator("#import")
    result = dashboard.locator("#import-result")
    apply = dashboard.get_by_role("button", name="Apply")

    # A roster naming an unknown student: the dry run lists the row, Apply stays off.
    form.get_by_label("Kind", exact=True).select_option("enrolments")
    form.get_by_label("CSV file", exact=True).set_input_files(roster)
    dashboard.get_by_role("button", name="Check (dry run)").click()
    expect(result).to_have_attribute("data-outcome", "errors")
    expect(dashboard.locator("#import-errors tbody tr")).to_have_count(1)
    expect(dashboard.locator("#import-errors tbody tr")).to_contain_text("3")
    expect(apply).to_be_disabled()
    conftest.screenshot(dashboard, "import")

    # Students first (dry run, then apply), then the corrected roster.
    for kind, path in (("students", students), ("enrolments", roster)):
        if kind == "enrolments":
            roster.write_text("site,course,student_id\ncampus,cs101,s4\ncampus,cs101,s5\n")
        form.get_by_label("Kind", exact=True).select_option(kind)
        form.get_by_label("CSV file", exact=True).set_input_files(path)
        dashboard.get_by_role("button", name="Check (dry run)").click()
        expect(result).to_have_attribute("data-outcome", "checked")
        expect(result).to_contain_text("2 new")
        apply.click()
        expect(result).to_have_attribute("data-outcome", "applied")
        expect(apply).to_be_disabled()

    form.get_by_label("For", exact=True).select_option("course")
    form.get_by_label("Site", exact=True).fill("campus")
    form.get_by_label("Course / session id / student id", exact=True).fill("cs101")
    with dashboard.expect_download() as download:
        dashboard.get_by_role("button", name="Download CSV").click()
    expect(dashboard.locator("#export-result")).to_contain_text("Downloaded")
    assert download.value.suggested_filename.endswith(".csv")
    with open(download.value.path(), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    status = {row["student_id"]: row["status"] for row in rows if row["date"] == room.session_date}
    assert set(status) == {"s1", "s2", "s3", "s4", "s5"}, rows
    assert status["s3"] == "present" and status["s4"] == "pending"


def test_a_teachers_live_room_and_activity(room: conftest.Room, browser: sync_api.Browser) -> None:
    """A teacher's token: its check-in fills the live room from the stream and is listed after
    a reload; the activity view, whose audit log is not a teacher's, says so and shows
    check-ins instead; no error anywhere."""
    room.add_course_now()
    token = room.central.cli(
        "token",
        "create",
        "--role",
        "teacher",
        "--site",
        "campus",
        "--name",
        "ms-a",
        "--course",
        "campus/cs101",
    ).stdout.split()[-1]
    made = browser.new_context(
        locale="en-US", timezone_id="UTC", viewport={"width": 1280, "height": 860}
    )
    made.set_default_timeout(5000)
    try:
        page = made.new_page()
        page.goto(room.url + "/dashboard#live-room")
        page.get_by_label("Admin token").fill(token)
        page.get_by_role("button", name="Use token").click()
        expect(page.locator("#live")).to_have_text("Live")
        page.get_by_label("Room", exact=True).select_option("campus/a-101")
        expect(page.locator("#live-summary")).to_contain_text("checked in today")
        checkin_id = check_in(room, "s1")
        row = page.locator(f'#live-table tr[data-checkin="{checkin_id}"]')
        expect(row.locator(".student")).to_have_text("s1")
        page.reload()
        expect(page.locator("#live")).to_have_text("Live")
        expect(row.locator(".student")).to_have_text("s1")
        expect(page.locator("#error")).to_be_hidden()
        conftest.screenshot(page, "dashboard-teacher-live-room")

        page.get_by_role("link", name="Activity").click()
        expect(page.locator("#notice")).to_contain_text("audit log is for admin and auditor")
        expect(page.get_by_label("Log", exact=True)).to_have_value("checkins")
        expect(page.locator("#activity-table tbody")).to_contain_text("s1 in campus/a-101")
        expect(page.locator("#error")).to_be_hidden()
    finally:
        made.close()
