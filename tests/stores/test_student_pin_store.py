"""A new PIN revokes the student's remembered browsers, in the PIN's own transaction (issue
13, F9), on SQLite and PostgreSQL."""

from __future__ import annotations

from central.storage import database
from tests.stores import test_contract

SITE = test_contract.SITE
NOW = 1_000_000
LATER = NOW + 86_400_000


async def test_a_new_pin_revokes_only_that_students_credentials(db: database.Database) -> None:
    await test_contract.provision(db)
    for student in ("s1", "s2"):
        await db.add_student(SITE, student, "old-hash")
    await db.add_credential("c1-phone", SITE, "s1", NOW, LATER)
    await db.add_credential("c1-laptop", SITE, "s1", NOW, LATER)
    await db.add_credential("c2-phone", SITE, "s2", NOW, LATER)
    assert await db.set_student_pin(SITE, "s1", "new-hash")
    assert not await db.credential_active("c1-phone", NOW + 1)
    assert not await db.credential_active("c1-laptop", NOW + 1)
    assert await db.credential_active("c2-phone", NOW + 1)
    assert not await db.set_student_pin(SITE, "ghost", "x")
    assert await db.credential_active("c2-phone", NOW + 1)
