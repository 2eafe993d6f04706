"""`python -m central backup` and `python -m central restore`: a site's records and keys
outlive its disk.

`backup` snapshots the configured database while central runs and seals central's keys in the
same archive (central/admin/backup_archive.py); `--every` repeats it into a folder, keeping the
newest `--keep`. `restore` refuses a data dir or database that is not empty, and checks the
archive and the passphrase before it writes anything. The passphrase never comes from the
command line (where `ps` and shell history would show it): a file, or the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import pathlib
import re
import shutil
import signal
import sys
import tempfile
import time
import types
import typing

from central.admin import backup_archive
from central.admin import backup_db
from central.core import clock as clock_mod
from central.core import keyring
from central.core import settings as settings_mod
from edge_agent import keystore
from edge_agent.protocol import keys

PASSPHRASE_ENV = "ROOMPROOF_BACKUP_PASSPHRASE"
ARCHIVE_PREFIX = "roomproof-backup-"
ARCHIVE_SUFFIX = ".tar.gz"
_DURATION = re.compile(r"^([1-9][0-9]*)(s|m|h)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}


class Failed(Exception):
    """The backup or restore cannot be done; the message says why (exit code 1)."""


class UsageError(Exception):
    """Options that do not go together (exit code 2)."""


def _duration(text: str) -> int:
    found = _DURATION.match(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected e.g. 10m, 1h or 30s")
    return int(found.group(1)) * _UNIT_S[found.group(2)]


def add_parsers(
    commands: typing.Any,  # argparse's private _SubParsersAction
    common: argparse.ArgumentParser,
) -> None:
    secret = argparse.ArgumentParser(add_help=False)
    secret.add_argument(
        "--passphrase-file",
        type=pathlib.Path,
        help=f"file holding the archive's passphrase (or ${PASSPHRASE_ENV})",
    )
    backup = commands.add_parser(
        "backup",
        parents=[common, secret],
        help="a consistent snapshot of the database and the sealed keys, while central runs",
    )
    where = backup.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=pathlib.Path, help="the archive to write")
    where.add_argument(
        "--out-dir",
        type=pathlib.Path,
        help=f"write {ARCHIVE_PREFIX}<UTC time>{ARCHIVE_SUFFIX} into this folder",
    )
    backup.add_argument(
        "--every",
        type=_duration,
        metavar="DURATION",
        help="with --out-dir: repeat every DURATION (e.g. 10m) until stopped",
    )
    backup.add_argument(
        "--keep", type=int, metavar="N", help="with --out-dir: keep only the N newest archives"
    )
    restore = commands.add_parser(
        "restore",
        parents=[common, secret],
        help="restore an archive into the (empty) data_dir / database of the configuration",
    )
    restore.add_argument("archive", type=pathlib.Path)


def main(
    args: argparse.Namespace,
    settings: settings_mod.CentralSettings,
    clock: clock_mod.Clock | None = None,
) -> int:
    clock = clock or clock_mod.SystemClock()
    try:
        if args.command == "backup":
            return _backup(args, settings, clock)
        return _restore(args, settings)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (Failed, backup_db.DatabaseError, backup_archive.ArchiveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _progress(text: str) -> None:
    print(f"backup: {text}", file=sys.stderr, flush=True)


def _passphrase(args: argparse.Namespace) -> str:
    text: str
    if args.passphrase_file is not None:
        try:
            text = args.passphrase_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise Failed(f"--passphrase-file {args.passphrase_file}: {exc}") from exc
        text = text.removesuffix("\n").removesuffix("\r")
    else:
        text = os.environ.get(PASSPHRASE_ENV, "")
    if not text:
        raise Failed(
            f"no passphrase: give --passphrase-file FILE or set {PASSPHRASE_ENV}"
            " (never on the command line)"
        )
    return text


def _central_version() -> str:
    try:
        return importlib.metadata.version("roomproof")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _read_keys(data_dir: pathlib.Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for name in keyring.KEY_FILES:
        try:
            found[name] = (data_dir / name).read_bytes()
        except FileNotFoundError as exc:
            raise Failed(
                f"{data_dir / name} is missing: central makes its keys when it first starts"
                " (or adds a device); is data_dir right?"
            ) from exc
    return found


def backup_to(
    settings: settings_mod.CentralSettings,
    out: pathlib.Path,
    passphrase: str,
    clock: clock_mod.Clock,
) -> dict[str, typing.Any]:
    """One archive at `out`; returns its manifest."""
    started = time.monotonic()
    key_files = _read_keys(settings.data_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=".roomproof-backup-", dir=out.parent))
    try:
        engine: backup_archive.Engine
        if settings.database_url:
            engine = "postgresql"
            database = workdir / "central.pgdump"
            _progress(f"pg_dump of {backup_db.describe(settings.database_url)}")
            tables = asyncio.run(backup_db.pg_snapshot(settings.database_url, database))
        else:
            engine = "sqlite"
            database = workdir / "central.db"
            _progress(f"snapshot of {settings.db_path}")
            tables = backup_db.sqlite_snapshot(settings.db_path, database)
        manifest = backup_archive.write(
            out,
            engine=engine,
            database=database,
            keys=key_files,
            tables=tables,
            passphrase=passphrase,
            now_ms=clock.now_ms(),
            central_version=_central_version(),
            progress=_progress,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _progress(
        f"wrote {out} ({engine}, {sum(tables.values())} rows in {len(tables)} tables,"
        f" {out.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - started:.1f} s"
    )
    return manifest


def archive_name(now_ms: int) -> str:
    """Sorts by time: `roomproof-backup-20261202T101500.123Z.tar.gz`."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ms // 1000))
    return f"{ARCHIVE_PREFIX}{stamp}.{now_ms % 1000:03d}Z{ARCHIVE_SUFFIX}"


def rotate(folder: pathlib.Path, keep: int) -> list[pathlib.Path]:
    """Removes all but the `keep` newest archives of ours in `folder`; returns the removed."""
    ours = sorted(
        p
        for p in folder.glob(f"{ARCHIVE_PREFIX}*{ARCHIVE_SUFFIX}")
        if p.is_file() and not p.name.startswith(".")
    )
    removed = ours[: max(0, len(ours) - keep)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def _backup(
    args: argparse.Namespace, settings: settings_mod.CentralSettings, clock: clock_mod.Clock
) -> int:
    if args.out is not None and (args.every is not None or args.keep is not None):
        raise UsageError("--every and --keep go with --out-dir")
    if args.keep is not None and args.keep < 1:
        raise UsageError("--keep must be at least 1")
    passphrase = _passphrase(args)
    if len(passphrase) < backup_archive.MIN_PASSPHRASE_CHARS:
        raise Failed(
            f"the passphrase must have at least {backup_archive.MIN_PASSPHRASE_CHARS} characters"
        )
    if args.out is not None:
        backup_to(settings, args.out, passphrase, clock)
        print(args.out)
        return 0
    if args.every is None:
        _into_dir(settings, args.out_dir, args.keep, passphrase, clock)
        return 0
    # SIGTERM (systemctl stop) ends the loop like Ctrl-C, removing a half-written archive.
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            started = time.monotonic()
            try:
                _into_dir(settings, args.out_dir, args.keep, passphrase, clock)
            except (Failed, backup_db.DatabaseError, OSError) as exc:
                # The next run may succeed (a database back from a restart): keep going.
                print(f"error: {exc}", file=sys.stderr, flush=True)
            time.sleep(max(0.0, args.every - (time.monotonic() - started)))
    _progress("stopped")
    return 0


def _interrupt(signum: int, frame: types.FrameType | None) -> None:
    raise KeyboardInterrupt


def _into_dir(
    settings: settings_mod.CentralSettings,
    folder: pathlib.Path,
    keep: int | None,
    passphrase: str,
    clock: clock_mod.Clock,
) -> None:
    out = folder / archive_name(clock.now_ms())
    backup_to(settings, out, passphrase, clock)
    if keep is not None:
        for path in rotate(folder, keep):
            _progress(f"removed {path.name} (--keep {keep})")
    print(out, flush=True)  # once the folder holds what it will keep


def _require_empty_dir(data_dir: pathlib.Path) -> None:
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise Failed(
            f"data_dir {data_dir} is not empty: restore only into an empty or new data dir"
        )


def _restore(args: argparse.Namespace, settings: settings_mod.CentralSettings) -> int:
    passphrase = _passphrase(args)
    data_dir, url = settings.data_dir, settings.database_url
    _require_empty_dir(data_dir)
    if url:
        asyncio.run(backup_db.pg_require_empty(url))
    if not args.archive.is_file():
        raise Failed(f"{args.archive}: no such file")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=".roomproof-restore-", dir=data_dir.parent))
    try:
        print(f"restore: checking {args.archive}", file=sys.stderr, flush=True)
        contents = backup_archive.open_verified(args.archive, passphrase, workdir)
        wanted = "postgresql" if url else "sqlite"
        if contents.engine != wanted:
            raise Failed(
                f"the archive holds a {contents.engine} database; this configuration uses"
                f" {wanted} (set or unset database_url to match)"
            )
        if sorted(contents.keys) != sorted(keyring.KEY_FILES) or any(
            len(value) != keys.SEED_BYTES for value in contents.keys.values()
        ):
            raise Failed(f"{args.archive}: the sealed keys are not central's key files")
        if not url:
            backup_db.sqlite_check(contents.database)
            _same_counts(contents.tables, backup_db.sqlite_counts(contents.database))
            keystore.ensure_private_dir(data_dir, "data_dir")
            _write_keys(data_dir, contents.keys)
            os.replace(contents.database, settings.db_path)
        else:
            print("restore: pg_restore", file=sys.stderr, flush=True)
            restored = asyncio.run(backup_db.pg_restore(url, contents.database))
            _same_counts(contents.tables, restored)
            keystore.ensure_private_dir(data_dir, "data_dir")
            _write_keys(data_dir, contents.keys)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    made = contents.manifest["created_at"]
    rows = sum(contents.tables.values())
    print(f"restored {args.archive} (made {made}, {rows} rows) into {_target(settings)}")
    return 0


def _target(settings: settings_mod.CentralSettings) -> str:
    if settings.database_url:
        return f"{backup_db.describe(settings.database_url)} and {settings.data_dir}"
    return str(settings.data_dir)


def _same_counts(expected: dict[str, int], found: dict[str, int]) -> None:
    if expected != found:
        differ = sorted(
            name for name in expected.keys() | found.keys() if expected.get(name) != found.get(name)
        )
        raise Failed(f"restored row counts differ from the manifest's in {', '.join(differ)}")


def _write_keys(data_dir: pathlib.Path, key_files: dict[str, bytes]) -> None:
    for name in keyring.KEY_FILES:
        fd = os.open(data_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_files[name])
            out.flush()
            os.fsync(out.fileno())
