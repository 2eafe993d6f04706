"""Student authentication: PINs under a memory-hard KDF (Argon2id), then a signed, expiring,
revocable browser credential so that returning students skip the KDF entirely."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets

import argon2
import argon2.exceptions
import itsdangerous

from central import store

SALT = "roomproof-student-credential"
_HASHER = argon2.PasswordHasher()
# Verifying against this keeps unknown students as slow as wrong PINs (no enumeration).
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(8))


def pin_problem(pin: str) -> str | None:
    """Why a PIN cannot be used, or None: one rule for `student add` and the CSV import."""
    if not 4 <= len(pin) <= 64:
        return "the PIN must have 4 to 64 characters"
    return None


def hash_pin(pin: str) -> str:
    return _HASHER.hash(pin)


async def verify_pin(db: store.Store, site: str, student_id: str, pin: str) -> bool:
    student = await db.get_student(site, student_id)
    encoded = student.pin_hash if student else _DUMMY_HASH

    def check() -> bool:
        try:
            return _HASHER.verify(encoded, pin)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    return await asyncio.to_thread(check) and student is not None


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
            value = self._serializer.loads(token, max_age=self.ttl_s)
        except itsdangerous.BadData:
            return None
        if not (
            isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value)
        ):
            return None
        return Credential(*value)
