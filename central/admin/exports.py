"""Attendance exports (CSV and PDF) of one occurrence, a course or a student, for the API
and the CLI alike.

One line per student per occurrence. Each check-in record gets a fresh verification link
when the export is made (only a link's hash is stored, so an earlier link cannot be shown
again); a record whose evidence is still pending gets none.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime
import io
import pathlib
import typing

import fpdf

from central.checkin import attendance
from central.checkin import records
from central.core import keyring
from central.core import params
from central.domain import timetable
from central.storage import database

CSV_COLUMNS = (
    "session_id",
    "course",
    "room",
    "date",
    "starts_at",
    "student_id",
    "status",
    "on_roster",
    "checkin_id",
    "checked_in_at",
    "checked_out_at",
    "duration_s",
    "flags",
    "note",
    "verify_url",
)
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection, OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
FONT_DIR = pathlib.Path("/usr/share/fonts/truetype/dejavu")

# Who may see a course: (site, course) -> bool (a teacher token's scope, or everything).
Sees = typing.Callable[[str, str], bool]


class NotFound(LookupError):
    """The session, occurrence, course or student to export does not exist."""

    def __init__(self, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class Forbidden(PermissionError):
    """A teacher asked for a course that is not theirs."""


@dataclasses.dataclass(frozen=True)
class Selection:
    """Exactly one of: an occurrence (session_id + date), a course, a student."""

    session_id: int | None = None
    date: datetime.date | None = None
    site: str | None = None
    course: str | None = None
    student_id: str | None = None

    def title(self) -> str:
        if self.session_id is not None:
            return f"Attendance: session {self.session_id} on {self.date}"
        if self.course is not None:
            return f"Attendance: course {self.site}/{self.course}"
        return f"Attendance: student {self.site}/{self.student_id}"

    def filename(self, extension: str) -> str:
        if self.session_id is not None:
            stem = f"session-{self.session_id}-{self.date}"
        elif self.course is not None:
            stem = f"course-{self.site}-{self.course}"
        else:
            stem = f"student-{self.site}-{self.student_id}"
        return f"attendance-{stem}.{extension}"


@dataclasses.dataclass(frozen=True)
class Line:
    occurrence: timetable.Occurrence
    row: attendance.Row
    verify_url: str

    def cells(self) -> list[str]:
        checkin, override = self.row.checkin, self.row.override
        duration = ""
        if checkin is not None and checkin.checked_out_at is not None:
            duration = str((checkin.checked_out_at - checkin.created_at) // 1000)
        return [
            str(self.occurrence.session.id),
            self.occurrence.session.course,
            self.occurrence.session.room,
            self.occurrence.key,
            params.iso(self.occurrence.start_ms) or "",
            self.row.student_id,
            self.row.status,
            "yes" if self.row.on_roster else "no",
            str(checkin.id) if checkin else "",
            (params.iso(checkin.created_at) or "") if checkin else "",
            (params.iso(checkin.checked_out_at) or "") if checkin else "",
            duration,
            "; ".join(checkin.flags) if checkin else "",
            override.note if override else "",
            self.verify_url,
        ]


@dataclasses.dataclass
class Export:
    selection: Selection
    lines: list[Line]
    links: int  # verification links made for this export


async def _occurrences(
    db: database.Database, selection: Selection, now_ms: int, sees: Sees, site: str | None
) -> list[tuple[timetable.Occurrence, list[attendance.Row]]]:
    """`site`: the caller's site (None: every site); another site's session, course or
    student is NotFound, exactly like one that does not exist."""
    if selection.session_id is not None:
        session = await db.get_session(selection.session_id)
        if session is None or (site is not None and session.site != site):
            raise NotFound(f"no session {selection.session_id}")
        if not sees(session.site, session.course):
            raise Forbidden(f"course {session.site}/{session.course} is not yours")
        date = selection.date or timetable.default_date(session, now_ms)
        found = timetable.occurrence(session, date)
        if found is None:
            raise NotFound(*timetable.not_meeting(session, date))
        return [(found, await attendance.report(db, found, now_ms))]
    assert selection.site is not None
    elsewhere = site is not None and selection.site != site
    if selection.course is not None:
        if elsewhere or await db.get_course(selection.site, selection.course) is None:
            raise NotFound(f"no course {selection.site}/{selection.course}")
        if not sees(selection.site, selection.course):
            raise Forbidden(f"course {selection.site}/{selection.course} is not yours")
        result = []
        sessions = await db.list_sessions(selection.site, selection.course, None, 10_000, 0)
        for session in sessions:
            for occurrence in timetable.between(session, 0, now_ms + 1):
                result.append((occurrence, await attendance.report(db, occurrence, now_ms)))
        result.sort(key=lambda item: (item[0].start_ms, item[0].session.id))
        return result
    assert selection.student_id is not None
    if elsewhere or await db.get_student(selection.site, selection.student_id) is None:
        raise NotFound(f"no student {selection.site}/{selection.student_id}")
    history = await attendance.student_history(
        db, selection.site, selection.student_id, 0, now_ms, now_ms
    )
    return [(o, [row]) for o, row in history if sees(o.session.site, o.session.course)]


async def collect(
    db: database.Database,
    keys: keyring.Keyring,
    public_base: str,
    selection: Selection,
    now_ms: int,
    link_ttl_days: float,
    sees: Sees,
    site: str | None = None,
) -> Export:
    """The export's lines, with a new verification link for every check-in record."""
    lines: list[Line] = []
    links = 0
    expires = now_ms + int(link_ttl_days * 86400_000)
    if selection.session_id is not None and selection.date is None:
        # No date: the session's default occurrence, named in the title and the file name.
        session = await db.get_session(selection.session_id)
        if session is not None:
            date = timetable.default_date(session, now_ms)
            selection = dataclasses.replace(selection, date=date)
    for occurrence, rows in await _occurrences(db, selection, now_ms, sees, site):
        for row in rows:
            url = ""
            if row.checkin is not None:
                try:
                    await records.bundle(db, keys, row.checkin, now_ms)
                except records.Pending:
                    pass  # no evidence yet: a link would show nothing
                else:
                    token = records.new_link_token()
                    await db.add_link(records.link_hash(token), row.checkin.id, now_ms, expires)
                    url = f"{public_base}/v/{token}"
                    links += 1
            lines.append(Line(occurrence, row, url))
    return Export(selection, lines, links)


def safe_cell(text: str) -> str:
    """Neutralises spreadsheet formulas: a leading quote makes the cell plain text."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def to_csv(export: Export) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for line in export.lines:
        writer.writerow([safe_cell(cell) for cell in line.cells()])
    return out.getvalue().encode("utf-8")


# PDF columns: heading, width in mm (A4 landscape: 277 mm between the margins), cell index.
_PDF_COLUMNS = (
    ("Date", 18, 3),
    ("Course", 20, 1),
    ("Room", 16, 2),
    ("Student", 22, 5),
    ("Status", 14, 6),
    ("Checked in (UTC)", 26, 9),
    ("Flags", 36, 12),
    ("Note", 32, 13),
    ("Verification link", 93, 14),
)
LINK_CELL = 14
CHECKED_IN_CELL = 9


class _Pdf(fpdf.FPDF):
    def __init__(self, title: str, made: str) -> None:
        super().__init__(orientation="landscape", format="A4")
        self.report_title = title
        self.made = made
        self.face = "helvetica"
        if (FONT_DIR / "DejaVuSans.ttf").exists():  # Unicode (notes, names) where installed
            self.add_font("dejavu", "", str(FONT_DIR / "DejaVuSans.ttf"))
            self.add_font("dejavu", "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
            self.face = "dejavu"
        self.set_title(title)
        self.set_creator("roomproof central")
        self.set_auto_page_break(auto=True, margin=15)

    def plain(self, value: str) -> str:
        """The core fonts know Latin-1 only."""
        if self.face == "helvetica":
            return value.encode("latin-1", "replace").decode("latin-1")
        return value

    def header(self) -> None:
        self.set_font(self.face, "B", 12)
        self.cell(0, 8, self.plain(self.report_title), new_x="LMARGIN", new_y="NEXT")
        self.set_font(self.face, "", 8)
        self.cell(0, 5, f"Made {self.made}", new_x="LMARGIN", new_y="NEXT")
        self.ln(2)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.face, "", 8)
        self.cell(0, 8, f"Page {self.page_no()} of {{nb}}", align="C")


def _pdf_bytes(export: Export, made: str) -> bytes:
    pdf = _Pdf(export.selection.title(), made)
    pdf.add_page()
    counts: dict[str, int] = {}
    for line in export.lines:
        counts[line.row.status] = counts.get(line.row.status, 0) + 1
    pdf.set_font(pdf.face, "", 9)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no records"
    pdf.cell(0, 6, f"{len(export.lines)} lines: {summary}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font(pdf.face, "", 7)
    with pdf.table(
        col_widths=tuple(width for _, width, _ in _PDF_COLUMNS),
        headings_style=fpdf.FontFace(emphasis="BOLD", fill_color=(225, 225, 225)),
        line_height=4,
        text_align="LEFT",
        repeat_headings=1,
    ) as table:
        heading = table.row()
        for title, _, _ in _PDF_COLUMNS:
            heading.cell(title)
        for line in export.lines:
            cells = line.cells()
            row = table.row()
            # Shorter times on paper: "2027-03-22 08:01:00" instead of RFC 3339 with ms.
            cells[CHECKED_IN_CELL] = cells[CHECKED_IN_CELL][:19].replace("T", " ")
            for _, _, index in _PDF_COLUMNS:
                url = cells[LINK_CELL] if index == LINK_CELL and cells[LINK_CELL] else None
                row.cell(pdf.plain(cells[index]), link=url)
    return bytes(pdf.output())


async def to_pdf(export: Export, now_ms: int) -> bytes:
    """A readable table with a heading on every page and page numbers; rendered off the loop."""
    return await asyncio.to_thread(_pdf_bytes, export, params.iso(now_ms) or "")
