"""The enrollment drop-in: a bundle copied onto the SD card's boot partition (FAT, readable by
anyone who holds the card) is taken into the private state dir at first start and erased from
the boot partition, so its one-time code does not linger where anyone can read it."""

from __future__ import annotations

import os
import pathlib
import pwd

STATE_NAME = "bundle.toml"
MAX_BYTES = 64 * 1024


class DropError(Exception):
    """The dropped bundle cannot be taken; the message says why."""


def take(source: pathlib.Path, state_dir: pathlib.Path, owner: str | None) -> pathlib.Path | None:
    """Moves `source` to STATE_DIR/bundle.toml (0600, owned by `owner`); None if no drop."""
    if not source.exists():
        return None
    data = source.read_bytes()
    if len(data) > MAX_BYTES:
        raise DropError(f"{source} is larger than {MAX_BYTES} bytes: not a bundle")
    uid = gid = -1
    if owner is not None:
        try:
            entry = pwd.getpwnam(owner)
        except KeyError as exc:
            raise DropError(f"no user {owner!r} to own the state dir") from exc
        uid, gid = entry.pw_uid, entry.pw_gid
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if owner is not None:
        os.chown(state_dir, uid, gid)
    target = state_dir / STATE_NAME
    temporary = state_dir / f".{STATE_NAME}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(descriptor, data)
        os.fsync(descriptor)
        if owner is not None:
            os.fchown(descriptor, uid, gid)
    finally:
        os.close(descriptor)
    os.replace(temporary, target)
    _fsync_dir(state_dir)
    erase(source, len(data))
    return target


def erase(path: pathlib.Path, size: int) -> None:
    """Overwrite in place, then delete: FAT reuses the clusters, so the code is not left
    readable in free space by a casual undelete."""
    with path.open("r+b") as handle:
        handle.write(b"\0" * size)
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(directory: pathlib.Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
