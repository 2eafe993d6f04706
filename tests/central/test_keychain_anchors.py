"""The first entry of a key chain in each form central may hold it (a signed request, an older
agent's bare request, a backfilled proof, nothing) and a re-enrollment entry: what each shows,
and what is refused."""

from __future__ import annotations

import typing

import pytest

from central.checkin import keychain
from central.storage import store
from edge_agent.protocol import b64
from edge_agent.protocol import enroll
from edge_agent.protocol import keys
from tests.protocol import examples as ex

SITE, DEVICE = ex.SITE, ex.DEVICE


def entry(
    kind: str, from_seq: int, key: bytes, evidence: str, note: str = ""
) -> dict[str, typing.Any]:
    return {
        "kind": kind,
        "from_seq": from_seq,
        "ed25519": b64.encode(key),
        "evidence": evidence,
        "note": note,
    }


def chain(*entries: dict[str, typing.Any]) -> dict[str, typing.Any]:
    last = b64.decode(entries[-1]["ed25519"])
    return {"kid": keychain.thumbprint(last), "chain": list(entries)}


def check(value: dict[str, typing.Any], seq: int = 5) -> keychain.Checked:
    return keychain.verify(value, SITE, DEVICE, seq)


def test_each_form_of_the_enrollment_entry() -> None:
    key = ex.DEVICE_ED.public
    signed = check(chain(entry("enroll", 1, key, ex.enroll_request_jws())))
    assert signed.key == key and "signed by the enrolled key" in signed.checks[0]
    bare = ex.enroll_request().decode()
    unsigned = check(chain(entry("enroll", 1, key, bare, store.NOTE_UNSIGNED_REQUEST)))
    assert "not signed by the key" in unsigned.checks[0]
    backfilled = check(chain(entry("enroll", 1, key, ex.proof_jws(), store.NOTE_BACKFILL_PROOF)))
    assert "proof seq 1" in backfilled.checks[0]
    nothing = check(chain(entry("enroll", 1, key, "", store.NOTE_BACKFILL_NONE)))
    assert store.NOTE_BACKFILL_NONE in nothing.checks[0]


@pytest.mark.parametrize(
    ("evidence", "note", "why"),
    [
        ("", "", "no evidence and no note"),
        ("{}", "", "not an enrollment request"),
        ("eyJ.x.y", "", "not a JWS"),
    ],
)
def test_broken_enrollment_entries(evidence: str, note: str, why: str) -> None:
    with pytest.raises(keychain.ChainError, match=why):
        check(chain(entry("enroll", 1, ex.DEVICE_ED.public, evidence, note)))


def test_a_backfilled_proof_must_be_the_keys_and_in_its_range() -> None:
    other = keys.SigningKey.generate().public
    with pytest.raises(keychain.ChainError, match="not this device's, by this key"):
        check(chain(entry("enroll", 1, other, ex.proof_jws(), store.NOTE_BACKFILL_PROOF)))
    rotated = entry("rotate", 2, ex.NEW_ED.public, ex.keychange_jws())
    first = entry("enroll", 1, ex.DEVICE_ED.public, ex.proof_jws(), store.NOTE_BACKFILL_PROOF)
    assert check(chain(first, rotated)).key == ex.NEW_ED.public
    with pytest.raises(keychain.ChainError, match="start with the enrollment"):
        check(chain(dict(first, from_seq=2), rotated))


def test_a_re_enrollment_entry() -> None:
    new, new_x = keys.SigningKey.generate(), keys.AgreementKey.generate()
    request = enroll.sign_request(ex.ENROLLMENT_CODE, SITE, "b-202", DEVICE, new, new_x.public, 7)
    first = entry("enroll", 1, ex.DEVICE_ED.public, ex.enroll_request_jws())
    moved = entry("re_enroll", 7, new.public, request.decode())
    checked = check(chain(first, moved), 7)
    assert checked.key == new.public and "signed by the new key" in checked.checks[1]
    with pytest.raises(keychain.ChainError, match="from_seq is not the entry's"):
        check(chain(first, dict(moved, from_seq=6)), 7)
    with pytest.raises(keychain.ChainError, match="after the proof"):
        check(chain(first, moved), 6)
    with pytest.raises(keychain.ChainError, match="must be a key change after"):
        check(chain(first, dict(moved, kind="enroll")), 7)
