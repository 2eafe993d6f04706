"""Central's own keys (Ed25519 for countersignatures and commands, X25519 for TOTP agreement)
and the secret that signs student credentials, created once in data_dir with mode 0600."""

from __future__ import annotations

import dataclasses
import os
import pathlib

from edge_agent import tomlsettings
from edge_agent.protocol import keys


@dataclasses.dataclass(frozen=True)
class Keyring:
    signing: keys.SigningKey
    agreement: keys.AgreementKey
    credential_secret: bytes


def _secret(path: pathlib.Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return data
    if len(data) != 32:
        raise tomlsettings.ConfigError(f"{path}: corrupt key file ({len(data)} bytes, expected 32)")
    return data


def ensure_data_dir(data_dir: pathlib.Path) -> None:
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise tomlsettings.ConfigError(f"data_dir {data_dir}: cannot create: {exc}") from exc
    if not os.access(data_dir, os.W_OK):
        raise tomlsettings.ConfigError(f"data_dir {data_dir}: not writable")


def load(data_dir: pathlib.Path) -> Keyring:
    ensure_data_dir(data_dir)
    return Keyring(
        signing=keys.SigningKey(_secret(data_dir / "central-ed25519.key")),
        agreement=keys.AgreementKey(_secret(data_dir / "central-x25519.key")),
        credential_secret=_secret(data_dir / "credential-secret.key"),
    )
