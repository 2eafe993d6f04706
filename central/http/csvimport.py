"""CSV import of students, courses, enrolments and sessions, for the API and the CLI alike.

Every row is checked first, with the JSON API's own rules (apimodels.bodies.course_from_body,
session_from_body, the name rule, the PIN rule) and against the database; only a file without
a single row error is written, so an import is all or nothing. Importing the same file twice
changes nothing the second time: rows are matched to what exists (students by id, courses by
code, enrolments by course and student, sessions by course, room, first date and start) and
counted as created, updated or unchanged.

PINs: a dry run never verifies one, so it cannot tell whether a PIN is a student's current
one; an existing student's row with a PIN counts as `pin_will_be_set` instead. Setting a PIN
revokes the student's remembered browsers (the store does it with the PIN).
"""

from __future__ import annotations

import asyncio
import collections.abc
import csv
import dataclasses
import io
import re
import secrets
import typing

from central.checkin import students
from central.core import errors
from central.domain import timetable
from central.http.apimodels import bodies
from central.storage import database
from central.storage import store
from edge_agent.protocol import names

MAX_BYTES = 2 * 1024 * 1024
MAX_ROWS = 20_000
MAX_CELL = 500

# kind -> (required columns, optional columns)
COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "students": (("site", "student_id"), ("pin",)),
    "courses": (("site", "course"), ("name", "timezone")),
    "enrolments": (("site", "course", "student_id"), ()),
    "sessions": (
        ("site", "course", "room", "first_date", "start", "end"),
        ("weekly", "until", "grace_min", "checkout", "timezone"),
    ),
}
KINDS = tuple(COLUMNS)
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_INTEGER = re.compile(r"[+-]?[0-9]{1,6}")

Progress = typing.Callable[[str, int, int], None]  # (phase, done, total)


class CsvError(ValueError):
    """The file as a whole cannot be read (size, encoding, header); nothing was checked."""


class Interrupted(RuntimeError):
    """Someone changed the same records between the check and the writes (rare: the writes
    follow at once); the import is idempotent, so running it again completes it."""


@dataclasses.dataclass(frozen=True)
class RowError:
    row: int  # the CSV record's number, the header being 1: a spreadsheet's row number
    field: str | None
    message: str

    def json(self) -> dict[str, typing.Any]:
        return {"row": self.row, "field": self.field, "message": self.message}


@dataclasses.dataclass
class Result:
    kind: str
    dry_run: bool
    applied: bool = False
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    pin_will_be_set: int = 0  # dry runs: existing students whose row has a PIN
    pins: int = 0  # rows with a PIN
    errors: list[RowError] = dataclasses.field(default_factory=list)
    sites: frozenset[str] = frozenset()  # the sites the rows name (for the audit log)

    @property
    def site(self) -> str | None:
        """The one site all rows name, else None."""
        return next(iter(self.sites)) if len(self.sites) == 1 else None

    def json(self) -> dict[str, typing.Any]:
        return {
            "kind": self.kind,
            "dry_run": self.dry_run,
            "applied": self.applied,
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "pin_will_be_set": self.pin_will_be_set,
            "pins": self.pins,
            "errors": [e.json() for e in self.errors],
        }


class _RowProblem(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


Write = typing.Callable[[database.Database], typing.Awaitable[None]]


@dataclasses.dataclass
class _Plan:
    """What the checked file would do: one outcome per row, and the writes that do it."""

    # created|updated|unchanged|pin_will_be_set
    outcomes: list[str] = dataclasses.field(default_factory=list)
    pins: int = 0
    writes: list[Write] = dataclasses.field(default_factory=list)
    seen: dict[tuple[str, ...], int] = dataclasses.field(default_factory=dict)

    def once(self, key: tuple[str, ...], row: int, what: str) -> None:
        first = self.seen.setdefault(key, row)
        if first != row:
            raise _RowProblem(None, f"{what} appears already in row {first}")


def parse(data: bytes, kind: str) -> tuple[list[tuple[int, dict[str, str]]], list[RowError]]:
    """The data rows as {column: cell} with their row numbers, plus rows of the wrong shape.
    CsvError for a file that cannot be read at all."""
    if kind not in COLUMNS:
        raise CsvError(f"unknown import kind {kind!r}: one of {', '.join(KINDS)}")
    if len(data) > MAX_BYTES:
        raise CsvError(f"the file is larger than {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvError(f"the file is not UTF-8 (bad byte at offset {exc.start})") from exc
    if "\x00" in text:
        raise CsvError("the file contains NUL characters; is it a spreadsheet, not CSV?")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        records = list(reader)
    except csv.Error as exc:
        raise CsvError(f"malformed CSV near line {reader.line_num}: {exc}") from exc
    if not records or not any(cell.strip() for cell in records[0]):
        raise CsvError("the file is empty; the first row must name the columns")
    header = [cell.strip().lower() for cell in records[0]]
    required, optional = COLUMNS[kind]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    unknown = [c for c in header if c not in required + optional]
    missing = [c for c in required if c not in header]
    if duplicated or unknown or missing:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown {', '.join(c[:40] for c in unknown[:10])}")
        if duplicated:
            problems.append(f"repeated {', '.join(duplicated)}")
        raise CsvError(
            f"header: {'; '.join(problems)} (columns for {kind}: {', '.join(required)}"
            + (f", optional {', '.join(optional)}" if optional else "")
            + ")"
        )
    if len(records) - 1 > MAX_ROWS:
        raise CsvError(f"more than {MAX_ROWS} rows; split the file")
    rows: list[tuple[int, dict[str, str]]] = []
    bad: list[RowError] = []
    for number, record in enumerate(records[1:], start=2):
        if not any(cell.strip() for cell in record):
            continue  # a blank line
        if len(record) != len(header):
            bad.append(RowError(number, None, f"expected {len(header)} cells, found {len(record)}"))
            continue
        long = next((c for c, v in zip(header, record, strict=True) if len(v) > MAX_CELL), None)
        if long is not None:
            bad.append(RowError(number, long, f"{long} is longer than {MAX_CELL} characters"))
            continue
        rows.append((number, {c: v.strip() for c, v in zip(header, record, strict=True)}))
    return rows, bad


def _name(row: dict[str, str], key: str) -> str:
    """The API's name rule (`[a-z0-9][a-z0-9-]{0,62}`), with its message."""
    value = row.get(key, "")
    if not names.is_valid(value):
        raise _RowProblem(key, f"{key} must be a valid name")
    return value


def _body(row: dict[str, str], keys: collections.abc.Iterable[str]) -> dict[str, typing.Any]:
    """A JSON body from the non-empty cells: an empty cell means the API's default. Booleans
    and integers are converted when they look like one; anything else is passed on as text
    for the API's validator to refuse with its own message."""
    body: dict[str, typing.Any] = {}
    for key in keys:
        value = row.get(key, "")
        if value == "":
            continue
        if key in ("weekly", "checkout") and value.lower() in _TRUE | _FALSE:
            body[key] = value.lower() in _TRUE
        elif key == "grace_min" and _INTEGER.fullmatch(value):
            body[key] = int(value)
        else:
            body[key] = value
    return body


def _api_rule(exc: errors.ApiError) -> _RowProblem:
    field = exc.details.get("field")
    if field is None and exc.details.get("fields"):
        field = str(exc.details["fields"][0])
    return _RowProblem(field if isinstance(field, str) else None, exc.message)


class _Checker:
    """Checks rows one by one against the database (with small caches) into a plan."""

    def __init__(self, db: database.Database, dry_run: bool, pin_min_length: int) -> None:
        self.db = db
        self.dry_run = dry_run
        self.pin_min_length = pin_min_length
        self.sites: dict[str, bool] = {}
        self.courses: dict[tuple[str, str], store.Course | None] = {}
        self.rooms: dict[tuple[str, str], bool] = {}
        self.rosters: dict[tuple[str, str], set[str]] = {}
        self.added: dict[tuple[str, str], set[str]] = {}
        self.sessions: dict[tuple[str, str, str], list[timetable.Session]] = {}

    async def site(self, site: str) -> None:
        if site not in self.sites:
            self.sites[site] = await self.db.site_exists(site)
        if not self.sites[site]:
            raise _RowProblem("site", f"site {site} does not exist")

    async def course(self, site: str, course: str) -> store.Course:
        if (site, course) not in self.courses:
            self.courses[site, course] = await self.db.get_course(site, course)
        found = self.courses[site, course]
        if found is None:
            raise _RowProblem("course", f"course {site}/{course} does not exist")
        return found

    async def check_students(self, plan: _Plan, number: int, row: dict[str, str]) -> None:
        site, student_id = _name(row, "site"), _name(row, "student_id")
        await self.site(site)
        plan.once((site, student_id), number, f"student {student_id}")
        pin = row.get("pin", "")
        if pin:
            problem = students.pin_problem(pin, self.pin_min_length)
            if problem:
                raise _RowProblem("pin", problem)
            plan.pins += 1
        existing = await self.db.get_student(site, student_id)
        if existing is not None and not pin:
            plan.outcomes.append("unchanged")
            return
        if existing is not None and self.dry_run:
            # Never verified in a dry run: "unchanged" would confirm a guessed PIN.
            plan.outcomes.append("pin_will_be_set")
            return
        if existing is not None and await students.verify_pin(self.db, site, student_id, pin):
            plan.outcomes.append("unchanged")  # the same PIN again: credentials stay
            return
        # Without a PIN a new student gets a locked one (the hash of a secret nobody holds):
        # they cannot check in until an import with a `pin` gives them one.
        secret = pin or secrets.token_urlsafe(32)
        pin_hash = "" if self.dry_run else await asyncio.to_thread(students.hash_pin, secret)
        if existing is None:
            plan.outcomes.append("created")

            async def add(db: database.Database) -> None:
                await db.add_student(site, student_id, pin_hash)

            plan.writes.append(add)
        else:
            plan.outcomes.append("updated")

            async def set_pin(db: database.Database) -> None:
                await db.set_student_pin(site, student_id, pin_hash)

            plan.writes.append(set_pin)

    async def check_courses(self, plan: _Plan, number: int, row: dict[str, str]) -> None:
        site, code = _name(row, "site"), _name(row, "course")
        await self.site(site)
        plan.once((site, code), number, f"course {code}")
        existing = await self.db.get_course(site, code)
        body = _body(row, ("site", "course", "name", "timezone"))
        if existing is not None:  # an empty cell keeps what the course has
            body.setdefault("name", existing.name)
            body.setdefault("timezone", existing.timezone)
        try:
            course = bodies.course_from_body(body)
        except errors.ApiError as exc:
            raise _api_rule(exc) from exc
        if existing == course:
            plan.outcomes.append("unchanged")
        elif existing is None:
            plan.outcomes.append("created")
            plan.writes.append(lambda db: db.add_course(course))
        else:
            plan.outcomes.append("updated")

            async def update(db: database.Database) -> None:
                await db.update_course(course)

            plan.writes.append(update)

    async def check_enrolments(self, plan: _Plan, number: int, row: dict[str, str]) -> None:
        site, code = _name(row, "site"), _name(row, "course")
        student_id = _name(row, "student_id")
        course = await self.course(site, code)
        if await self.db.get_student(site, student_id) is None:
            raise _RowProblem("student_id", f"student {site}/{student_id} does not exist")
        plan.once((site, code, student_id), number, f"enrolment of {student_id} in {code}")
        key = (course.site, course.course)
        if key not in self.rosters:
            self.rosters[key] = set(await self.db.roster(site, code))
        if student_id in self.rosters[key]:
            plan.outcomes.append("unchanged")
            return
        added = self.added.setdefault(key, set())
        if len(self.rosters[key]) + len(added) >= bodies.MAX_ROSTER:
            raise _RowProblem("course", f"a roster holds up to {bodies.MAX_ROSTER} students")
        if not added:  # one roster write per course, with every new student of the file

            async def enrol(db: database.Database) -> None:
                current = await db.roster(site, code)
                await db.set_roster(site, code, sorted(set(current) | added))

            plan.writes.append(enrol)
        added.add(student_id)
        plan.outcomes.append("created")

    async def check_sessions(self, plan: _Plan, number: int, row: dict[str, str]) -> None:
        site, code, room = _name(row, "site"), _name(row, "course"), _name(row, "room")
        course = await self.course(site, code)
        if (site, room) not in self.rooms:
            self.rooms[site, room] = await self.db.get_room(site, room) is not None
        if not self.rooms[site, room]:
            raise _RowProblem("room", f"room {site}/{room} does not exist")
        body = _body(row, COLUMNS["sessions"][0] + COLUMNS["sessions"][1])
        try:
            session = bodies.session_from_body(body, course, room)
        except errors.ApiError as exc:
            raise _api_rule(exc) from exc
        key = (site, code, room, session.first_date.isoformat(), session.start.isoformat())
        plan.once(key, number, "a session of this course, room, first date and start")
        if (site, code, room) not in self.sessions:
            self.sessions[site, code, room] = await _all_sessions(self.db, site, code, room)
        existing = next(
            (
                s
                for s in self.sessions[site, code, room]
                if (s.first_date, s.start) == (session.first_date, session.start)
            ),
            None,
        )
        if existing is None:
            plan.outcomes.append("created")
            plan.writes.append(lambda db: _add_session(db, session))
            return
        session = dataclasses.replace(session, id=existing.id)
        if session == existing:
            plan.outcomes.append("unchanged")
            return
        plan.outcomes.append("updated")

        async def update(db: database.Database) -> None:
            await db.update_session(session)

        plan.writes.append(update)


async def _add_session(db: database.Database, session: timetable.Session) -> None:
    await db.add_session(session)


async def _all_sessions(
    db: database.Database, site: str, course: str, room: str
) -> list[timetable.Session]:
    found: list[timetable.Session] = []
    after = 0
    while True:
        page = await db.list_sessions(site, course, room, 1000, after)
        found += page
        if len(page) < 1000:
            return found
        after = page[-1].id


async def run(
    db: database.Database,
    kind: str,
    data: bytes,
    dry_run: bool,
    progress: Progress | None = None,
    site: str | None = None,
    pin_min_length: int = students.MIN_PIN_LENGTH,
) -> Result:
    """Checks every row; writes them all unless it is a dry run or any row has an error.
    CsvError when the file as a whole cannot be read; Interrupted when a write is refused.
    `site`: the importer's site (None: any); a row of another site is a row error that
    reads exactly like a site that does not exist. New PINs need `pin_min_length`
    characters (the setting of that name)."""
    rows, bad = parse(data, kind)
    result = Result(kind, dry_run, rows=len(rows) + len(bad), errors=list(bad))
    result.sites = frozenset(row.get("site", "") for _, row in rows)
    checker = _Checker(db, dry_run, pin_min_length)
    check = {
        "students": checker.check_students,
        "courses": checker.check_courses,
        "enrolments": checker.check_enrolments,
        "sessions": checker.check_sessions,
    }[kind]
    plan = _Plan()
    for done, (number, row) in enumerate(rows, start=1):
        try:
            if site is not None and _name(row, "site") != site:
                raise _RowProblem("site", f"site {row['site']} does not exist")
            await check(plan, number, row)
        except _RowProblem as exc:
            result.errors.append(RowError(number, exc.field, exc.message))
        if progress is not None:
            progress("check", done, len(rows))
    result.errors.sort(key=lambda e: e.row)
    result.pins = plan.pins
    if result.errors:
        return result
    for outcome in plan.outcomes:
        setattr(result, outcome, getattr(result, outcome) + 1)
    if dry_run:
        return result
    for done, write in enumerate(plan.writes, start=1):
        try:
            await write(db)
        except (store.Conflict, store.NotFound) as exc:
            raise Interrupted(
                f"the data changed while importing ({exc}); {done - 1} of {len(plan.writes)}"
                " writes were made: run the import again (rows already there count as unchanged)"
            ) from exc
        if progress is not None:
            progress("write", done, len(plan.writes))
    result.applied = True
    return result


def summary(result: Result) -> str:
    """One line for people (CLI, audit log)."""
    pins = f", PIN will be set for {result.pin_will_be_set}" if result.pin_will_be_set else ""
    return (
        f"{result.kind}: {result.rows} rows, {result.created} created,"
        f" {result.updated} updated, {result.unchanged} unchanged{pins},"
        f" {len(result.errors)} errors"
    )


def audited(result: Result) -> bool:
    """Written to the audit log: every applied import, and every import whose rows set PINs,
    dry runs and refused files included (who tried PINs on which students is on record)."""
    return result.applied or result.pins > 0


def audit_detail(result: Result) -> str:
    mode = "dry run" if result.dry_run else "applied" if result.applied else "refused"
    pins = f"; {result.pins} rows with a PIN" if result.pins else ""
    return f"{summary(result)}; {mode}{pins}"
