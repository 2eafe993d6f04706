"""The device's private keys: created once in the state dir (0600), never leaving it.

A key change (rotation or re-enrollment) is staged first: `stage` writes the new keys together
with what must reach central about them (the intent) to one file, atomically; the caller then
carries the intent out (idempotently) and `promote`s the keys, which removes the staged file
last. A crash at any point leaves either the old keys with nothing announced, or a staged
change that the next start finishes: never a key that central will not learn of.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import typing

from edge_agent import tomlsettings
from edge_agent.protocol import b64
from edge_agent.protocol import keys

log = logging.getLogger(__name__)
STAGED = "staged.json"
# What SQLite writes next to a database file; it creates them with the database's own mode.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


@dataclasses.dataclass(frozen=True)
class DeviceKeys:
    signing: keys.SigningKey
    agreement: keys.AgreementKey


def read_or_create(path: pathlib.Path) -> bytes:
    """A 32-byte secret from `path`, created (0600, fsynced) on first use."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = os.urandom(keys.SEED_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return data
    if len(data) != keys.SEED_BYTES:
        raise tomlsettings.ConfigError(
            f"{path}: corrupt key file ({len(data)} bytes, expected {keys.SEED_BYTES});"
            " restore it from backup or remove the state dir and enroll again"
        )
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return data


def ensure_private_dir(path: pathlib.Path, what: str = "state dir") -> None:
    """Create the directory (0700) or say clearly why it cannot be used; warn when an
    existing one is open to others (its secret files are 0600 either way)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise tomlsettings.ConfigError(f"{what} {path}: cannot create: {exc.strerror}") from exc
    if not os.access(path, os.W_OK):
        raise tomlsettings.ConfigError(f"{what} {path}: not writable")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "%s %s is open to other users (mode %03o): run `chmod 700 %s`;"
            " the keys and databases in it are 0600 regardless",
            what,
            path,
            mode,
            path,
        )


def private_sqlite(path: pathlib.Path) -> None:
    """Before SQLite opens `path`: create it empty with mode 0600 if missing, and make it and
    any -wal/-shm/-journal left from before 0600. SQLite gives the -wal and -shm files it
    creates later the database file's mode, so they are 0600 too, whatever the umask or the
    directory's mode."""
    if str(path) == ":memory:":
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass  # opened as it is: a reader without write access still gets SQLite's read-only
    for name in ("", *SQLITE_COMPANIONS):
        file = path.with_name(path.name + name)
        try:
            if file.stat().st_mode & 0o077:
                os.chmod(file, 0o600)
        except FileNotFoundError:
            continue
        except PermissionError as exc:  # another user's file: say so, SQLite may still work
            log.warning("cannot make %s private (0600): %s", file, exc.strerror)


def load(state_dir: pathlib.Path) -> DeviceKeys:
    ensure_private_dir(state_dir)
    key_dir = state_dir / "keys"
    key_dir.mkdir(mode=0o700, exist_ok=True)
    return DeviceKeys(
        signing=keys.SigningKey(read_or_create(key_dir / "ed25519.key")),
        agreement=keys.AgreementKey(read_or_create(key_dir / "x25519.key")),
    )


def generate() -> DeviceKeys:
    return DeviceKeys(keys.SigningKey.generate(), keys.AgreementKey.generate())


def _write_synced(path: pathlib.Path, data: bytes) -> None:
    """Replace `path` atomically with `data` (0600), durable once this returns."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    _sync_dir(path.parent)


def _sync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage(state_dir: pathlib.Path, new: DeviceKeys, intent: dict[str, typing.Any]) -> None:
    """Durably record new keys and the intent that announces them (JSON-serialisable)."""
    body = {
        "ed25519": b64.encode(new.signing.seed),
        "x25519": b64.encode(new.agreement.private),
        "intent": intent,
    }
    _write_synced(state_dir / "keys" / STAGED, json.dumps(body).encode())


def staged(state_dir: pathlib.Path) -> tuple[DeviceKeys, dict[str, typing.Any]] | None:
    """The staged key change, if a previous run did not finish it."""
    path = state_dir / "keys" / STAGED
    try:
        body = json.loads(path.read_bytes())
        new = DeviceKeys(
            keys.SigningKey(b64.decode(body["ed25519"])),
            keys.AgreementKey(b64.decode(body["x25519"])),
        )
        intent = body["intent"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise tomlsettings.ConfigError(
            f"{path}: corrupt staged key change ({exc}); restore it from backup"
        ) from exc
    if not isinstance(intent, dict):
        raise tomlsettings.ConfigError(f"{path}: corrupt staged key change (intent)")
    return new, intent


def promote(state_dir: pathlib.Path, new: DeviceKeys) -> None:
    """Make the staged keys the device's keys; the staged file goes last."""
    key_dir = state_dir / "keys"
    _write_synced(key_dir / "ed25519.key", new.signing.seed)
    _write_synced(key_dir / "x25519.key", new.agreement.private)
    (key_dir / STAGED).unlink(missing_ok=True)
    _sync_dir(key_dir)
