"""Property tests of the key chain a bundle carries: whatever stands in its place, or however
its entries are edited, the verifier answers with an EvidenceError (or ChainError) and never
crashes; no edit of a chained bundle verifies, since central countersigned the chain.

A chain is read by `central verify` from files anyone may hand over, so its decoder faces
adversarial input by design, like the bundle around it.
"""

from __future__ import annotations

import json
import typing

import hypothesis
import rfc8785
from hypothesis import strategies as st

from central.checkin import evidence
from central.checkin import keychain
from tests.fuzz import inputs
from tests.protocol import examples as ex

GENUINE = ex.bundle()
CENTRAL = ex.CENTRAL_ED.public
ROTATED = json.loads(ex.rotated_key_chain())
JSON = inputs.json_values()
ENTRY_FIELDS = ("kind", "from_seq", "ed25519", "evidence", "note")


def verify(data: bytes) -> evidence.Verified | None:
    try:
        return evidence.verify_bundle(data, None, CENTRAL)
    except evidence.EvidenceError as exc:
        assert exc.reason and str(exc)
        return None


def with_key(value: typing.Any) -> bytes | None:
    bundle = json.loads(GENUINE)
    bundle["key"] = value
    try:
        return rfc8785.dumps(bundle)
    except ValueError:
        return None


def test_the_genuine_chained_bundle_verifies() -> None:
    verified = verify(GENUINE)
    assert verified is not None and verified.device_kid == keychain.thumbprint(ex.DEVICE_ED.public)


@hypothesis.given(JSON)
def test_anything_in_place_of_the_chain_is_refused(value: typing.Any) -> None:
    data = with_key(value)
    hypothesis.assume(data is not None)
    assert data is not None
    assert verify(data) is None


@hypothesis.given(
    st.integers(0, len(ROTATED["chain"]) - 1),
    st.sampled_from(ENTRY_FIELDS),
    JSON
    | inputs.mutations_of([e["evidence"].encode() for e in ROTATED["chain"]], True).map(
        bytes.decode
    ),
)
def test_an_edited_entry_never_verifies_a_chain(index: int, field: str, value: typing.Any) -> None:
    chain = json.loads(json.dumps(ROTATED))
    hypothesis.assume(chain["chain"][index][field] != value)
    chain["chain"][index][field] = value
    try:
        checked = keychain.verify(chain, "campus", "pi-a101", ex.KEYCHANGE_FROM_SEQ)
    except keychain.ChainError as exc:
        assert str(exc)
        return
    # Only the notes are free text; no edit changes which key signs.
    assert field == "note" and checked.key == ex.NEW_ED.public


def test_no_byte_of_a_chained_bundle_can_change() -> None:
    start = GENUINE.index(b'"key":')
    end = GENUINE.index(b',"proof":')
    for position in range(start, end):
        for flip in (0x01, 0x20):
            data = bytearray(GENUINE)
            data[position] ^= flip
            assert verify(bytes(data)) is None, (position, flip)


@hypothesis.given(inputs.mutations(json.dumps(ROTATED).encode(), ascii_only=True))
def test_a_mutated_chain_document_never_crashes(data: bytes) -> None:
    try:
        value = json.loads(data)
    except ValueError:
        return
    try:
        checked = keychain.verify(value, "campus", "pi-a101", ex.KEYCHANGE_FROM_SEQ)
    except keychain.ChainError:
        return
    assert checked.key == ex.NEW_ED.public
