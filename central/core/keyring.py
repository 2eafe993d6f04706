"""Central's own keys (Ed25519 for countersignatures and commands, X25519 for TOTP agreement)
and the secret that signs student credentials, created once in data_dir with mode 0600."""

from __future__ import annotations

import dataclasses
import pathlib

from edge_agent import keystore
from edge_agent.protocol import keys

SIGNING_FILE = "central-ed25519.key"
AGREEMENT_FILE = "central-x25519.key"
CREDENTIAL_FILE = "credential-secret.key"
# Every secret central keeps in data_dir: what a backup must carry besides the database.
KEY_FILES = (SIGNING_FILE, AGREEMENT_FILE, CREDENTIAL_FILE)


@dataclasses.dataclass(frozen=True)
class Keyring:
    signing: keys.SigningKey
    agreement: keys.AgreementKey
    credential_secret: bytes


def ensure_data_dir(data_dir: pathlib.Path) -> None:
    keystore.ensure_private_dir(data_dir, "data_dir")


def load(data_dir: pathlib.Path) -> Keyring:
    ensure_data_dir(data_dir)
    return Keyring(
        signing=keys.SigningKey(keystore.read_or_create(data_dir / SIGNING_FILE)),
        agreement=keys.AgreementKey(keystore.read_or_create(data_dir / AGREEMENT_FILE)),
        credential_secret=keystore.read_or_create(data_dir / CREDENTIAL_FILE),
    )
