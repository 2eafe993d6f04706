"""Student authentication: PINs under a memory-hard KDF (Argon2id), then a signed, expiring,
revocable browser credential so that returning students skip the KDF entirely."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import secrets

import argon2
import argon2.exceptions
import itsdangerous

from central.storage import database
from central.storage import store

SALT = "roomproof-student-credential"
_HASHER = argon2.PasswordHasher()
# Verifying against this keeps unknown students as slow as wrong PINs (no enumeration).
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(8))


MIN_PIN_LENGTH = 6  # the default and least of the `pin_min_length` setting
MAX_PIN_LENGTH = 64


def pin_problem(pin: str, min_length: int) -> str | None:
    """Why a new PIN cannot be used, or None: one rule for the CLI and the CSV import (API
    and CLI). PINs set before the minimum was raised keep working: only new ones are held
    to it."""
    if not min_length <= len(pin) <= MAX_PIN_LENGTH:
        return f"the PIN must have {min_length} to {MAX_PIN_LENGTH} characters"
    return None


def hash_pin(pin: str) -> str:
    return _HASHER.hash(pin)


def pin_hash_of(student: store.Student | None) -> str:
    """The hash to verify a PIN against: an unknown student's is a dummy one, so that both
    cost one Argon2 verification (no enumeration by timing)."""
    return student.pin_hash if student is not None else _DUMMY_HASH


def pin_matches(encoded: str, pin: str) -> bool:
    """One Argon2id verification (blocking: run it off the event loop)."""
    try:
        return _HASHER.verify(encoded, pin)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


async def verify_pin(db: database.Database, site: str, student_id: str, pin: str) -> bool:
    """For admin tools (the CSV import); students' requests go through pinguard.PinGuard."""
    student = await db.get_student(site, student_id)
    matches = await asyncio.to_thread(pin_matches, pin_hash_of(student), pin)
    return matches and student is not None


@dataclasses.dataclass(frozen=True)
class Credential:
    id: str
    site: str
    student_id: str


class Credentials:
    def __init__(self, secret: bytes, ttl_s: float) -> None:
        self._serializer = itsdangerous.URLSafeTimedSerializer(secret, salt=SALT)
        self.ttl_s = ttl_s

    def issue(self, site: str, student_id: str) -> tuple[Credential, str]:
        credential = Credential(secrets.token_urlsafe(12), site, student_id)
        token = self._serializer.dumps([credential.id, site, student_id])
        return credential, str(token)

    def read(self, token: str) -> Credential | None:
        """The credential if the signature is good and it has not expired; no database here."""
        if not isinstance(token, str) or len(token) > 512:
            return None
        try:
            # itsdangerous counts whole seconds: a fractional TTL rounds up, never shortens.
            value = self._serializer.loads(token, max_age=math.ceil(self.ttl_s))
        except itsdangerous.BadData:
            return None
        if not (
            isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value)
        ):
            return None
        return Credential(*value)
