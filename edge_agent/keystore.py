"""The device's private keys: created once in the state dir (0600), never leaving it."""

from __future__ import annotations

import dataclasses
import os
import pathlib

from edge_agent import tomlsettings
from edge_agent.protocol import keys


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
    """Create the directory (0700) or say clearly why it cannot be used."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise tomlsettings.ConfigError(f"{what} {path}: cannot create: {exc.strerror}") from exc
    if not os.access(path, os.W_OK):
        raise tomlsettings.ConfigError(f"{what} {path}: not writable")


def load(state_dir: pathlib.Path) -> DeviceKeys:
    ensure_private_dir(state_dir)
    key_dir = state_dir / "keys"
    key_dir.mkdir(mode=0o700, exist_ok=True)
    return DeviceKeys(
        signing=keys.SigningKey(read_or_create(key_dir / "ed25519.key")),
        agreement=keys.AgreementKey(read_or_create(key_dir / "x25519.key")),
    )
