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


def _read_or_create(path: pathlib.Path) -> bytes:
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


def ensure_state_dir(state_dir: pathlib.Path) -> None:
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise tomlsettings.ConfigError(f"{state_dir}: cannot create state dir: {exc}") from exc
    if not os.access(state_dir, os.W_OK):
        raise tomlsettings.ConfigError(f"{state_dir}: state dir is not writable")


def load(state_dir: pathlib.Path) -> DeviceKeys:
    ensure_state_dir(state_dir)
    key_dir = state_dir / "keys"
    key_dir.mkdir(mode=0o700, exist_ok=True)
    return DeviceKeys(
        signing=keys.SigningKey(_read_or_create(key_dir / "ed25519.key")),
        agreement=keys.AgreementKey(_read_or_create(key_dir / "x25519.key")),
    )
