"""`python -m central import KIND FILE.csv` and `python -m central export attendance ...`:
the same code as the API's imports and exports, on the configured store."""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import time
import typing

import rich.console
import rich.progress

from central.admin import exports
from central.core import keyring
from central.core import settings as settings_mod
from central.domain import timetable
from central.http import audit
from central.http import csvimport
from central.storage import database
from central.storage import stores
from edge_agent.protocol import names


class UsageError(Exception):
    """Arguments that do not go together (exit code 2)."""


class Failed(Exception):
    """The file or the selection cannot be used (exit code 1)."""


def add_parsers(
    commands: typing.Any,  # argparse's private _SubParsersAction
    common: argparse.ArgumentParser,
) -> None:
    importer = commands.add_parser(
        "import",
        parents=[common],
        help="import students, courses, enrolments or sessions from CSV",
        description="All or nothing: any row error writes nothing. Exit 0 ok, 1 row errors.",
    )
    importer.add_argument("kind", choices=csvimport.KINDS)
    importer.add_argument("file", type=pathlib.Path, help="UTF-8 CSV with a header row")
    importer.add_argument("--dry-run", action="store_true", help="check only, write nothing")

    export = commands.add_parser("export", help="attendance exports").add_subparsers(
        dest="action", required=True
    )
    attendance = export.add_parser(
        "attendance", parents=[common], help="CSV or PDF, with a verification link per record"
    )
    attendance.add_argument("--format", choices=("csv", "pdf"), default="csv")
    which = attendance.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--session", type=int, metavar="N", help="a session's occurrence (see --date)"
    )
    which.add_argument("--course", metavar="SITE/COURSE", help="every occurrence so far")
    which.add_argument("--student", metavar="SITE/ID", help="the student's occurrences so far")
    attendance.add_argument(
        "--date",
        metavar="YYYY-MM-DD",
        help="the session's occurrence, in its time zone (default: today's there, else the"
        " latest past one)",
    )
    attendance.add_argument(
        "-o", "--out", type=pathlib.Path, help="file to write (default: standard output)"
    )


def main(args: argparse.Namespace, settings: settings_mod.CentralSettings) -> int:
    try:
        if args.command == "import":
            return _import(args, settings)
        return _export(args, settings)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Failed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _open(settings: settings_mod.CentralSettings) -> database.Database:
    keyring.ensure_data_dir(settings.data_dir)
    db = stores.make(settings)
    await db.open()
    return db


def _import(args: argparse.Namespace, settings: settings_mod.CentralSettings) -> int:
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise Failed(f"{args.file}: {exc.strerror}") from exc
    console = rich.console.Console(stderr=True)
    with rich.progress.Progress(
        rich.progress.TextColumn("{task.description}"),
        rich.progress.BarColumn(),
        rich.progress.MofNCompleteColumn(),
        rich.progress.TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, rich.progress.TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                label = "checking rows" if phase == "check" else "writing"
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done)

        async def run() -> csvimport.Result:
            db = await _open(settings)
            try:
                result = await csvimport.run(
                    db,
                    args.kind,
                    data,
                    args.dry_run,
                    progress,
                    pin_min_length=settings.pin_min_length,
                )
                if csvimport.audited(result):
                    detail = csvimport.audit_detail(result)
                    await audit.cli(db, f"import_{args.kind}", args.kind, detail, result.site)
                return result
            finally:
                await db.close()

        try:
            result = asyncio.run(run())
        except (csvimport.CsvError, csvimport.Interrupted) as exc:
            raise Failed(f"{args.file}: {exc}") from exc
    for error in result.errors:
        where = f"row {error.row}" + (f", {error.field}" if error.field else "")
        print(f"{args.file}: {where}: {error.message}", file=sys.stderr)
    if result.errors:
        print(f"{csvimport.summary(result)}; nothing written")
        return 1
    suffix = "; dry run, nothing written" if args.dry_run else ""
    print(csvimport.summary(result) + suffix)
    return 0


def _pair(text: str, option: str) -> tuple[str, str]:
    site, _, second = text.partition("/")
    if not (names.is_valid(site) and names.is_valid(second)):
        raise UsageError(f"{option} {text!r}: expected SITE/{option.upper().lstrip('-')}")
    return site, second


def _selection(args: argparse.Namespace) -> exports.Selection:
    if args.session is not None:
        if args.date is None:
            return exports.Selection(session_id=args.session)
        try:
            date = timetable.parse_date("date", args.date)
        except timetable.TimetableError as exc:
            raise UsageError(f"--date: {exc}") from exc
        return exports.Selection(session_id=args.session, date=date)
    if args.date is not None:
        raise UsageError("--date goes with --session")
    if args.course is not None:
        site, course = _pair(args.course, "--course")
        return exports.Selection(site=site, course=course)
    site, student = _pair(args.student, "--student")
    return exports.Selection(site=site, student_id=student)


def _export(args: argparse.Namespace, settings: settings_mod.CentralSettings) -> int:
    selection = _selection(args)
    keys = keyring.load(settings.data_dir)
    now = int(time.time() * 1000)

    async def run() -> tuple[exports.Export, bytes]:
        db = await _open(settings)
        try:
            export = await exports.collect(
                db,
                keys,
                settings.public_base,
                selection,
                now,
                settings.verify_link_ttl_days,
                lambda site, course: True,
            )
            if args.format == "csv":
                data = exports.to_csv(export)
            else:
                data = await exports.to_pdf(export, now)
            detail = f"{len(export.lines)} lines, {export.links} links"
            await audit.cli(
                db, "attendance_export", selection.filename("*"), detail, selection.site
            )
            return export, data
        finally:
            await db.close()

    try:
        export, data = asyncio.run(run())
    except exports.NotFound as exc:
        nearest = typing.cast(list[str], exc.details.get("meets_on", []))
        raise Failed(str(exc) + (f"; it meets on {', '.join(nearest)}" if nearest else "")) from exc
    if args.out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        try:
            args.out.write_bytes(data)
        except OSError as exc:
            raise Failed(f"{args.out}: {exc.strerror}") from exc
        print(
            f"{len(export.lines)} lines, {export.links} verification links: {args.out}",
            file=sys.stderr,
        )
    return 0
