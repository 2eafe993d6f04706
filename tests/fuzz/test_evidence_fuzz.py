"""Property tests of evidence.verify_bundle: anything raises EvidenceError or verifies, and a
bundle that verifies after any edit says exactly what the genuine one says.

Bundles are checked offline by people who got them from anywhere (`central verify`, the /v/
pages), so the verifier is the one decoder whose input is adversarial by design.
"""

from __future__ import annotations

import json
import typing

import hypothesis
from hypothesis import strategies as st

from central.checkin import evidence
from edge_agent.protocol import b64
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from tests.central import conftest as central_conftest
from tests.fuzz import inputs

IAT_MS = 1_760_000_000_000
CENTRAL_KEY = keys.SigningKey.generate()
DEVICE = central_conftest.ScriptedDevice("site-a", "a-101", "pi-a101")
PROOF_JWS = DEVICE.next_proof(iat_ms=IAT_MS)
SLOT = IAT_MS // (central_conftest.SLOT_S * 1000)
TOKEN = DEVICE.token(SLOT)
RECORD: dict[str, typing.Any] = {
    "record": 42,
    "site": DEVICE.site,
    "room": DEVICE.room,
    "device": DEVICE.device,
    "student_id": "s1234567",
    "slot": SLOT,
    "status": "present",
    "checked_in_at": IAT_MS + 3_000,
    "issued_at": IAT_MS + 3_050,
    "flags": [],
}
RECORD_JWS = evidence.sign_record(RECORD, TOKEN, PROOF_JWS, CENTRAL_KEY)
GENUINE = evidence.make_bundle(RECORD_JWS, TOKEN, PROOF_JWS)
KEYS = st.sampled_from(
    [
        (DEVICE.signing.public, CENTRAL_KEY.public),
        (CENTRAL_KEY.public, DEVICE.signing.public),
        (DEVICE.signing.public, bytes(32)),
        (b"", CENTRAL_KEY.public),
    ]
)


def verify(data: bytes, device_public: bytes, central_public: bytes) -> evidence.Verified | None:
    try:
        return evidence.verify_bundle(data, device_public, central_public)
    except evidence.EvidenceError as exc:
        assert exc.reason and str(exc)
        return None


def bundle_of(record_jws: str, token: str, proof_jws: str, kind: str) -> bytes:
    members = {"type": kind, "record": record_jws, "token": token, "proof": proof_jws}
    return json.dumps(members, sort_keys=True, separators=(",", ":")).encode()


def test_genuine_bundle_verifies() -> None:
    verified = evidence.verify_bundle(GENUINE, DEVICE.signing.public, CENTRAL_KEY.public)
    assert verified.record["record"] == 42


@hypothesis.given(
    st.binary(max_size=300) | inputs.json_values().map(lambda v: json.dumps(v).encode()), KEYS
)
def test_arbitrary_bytes(data: bytes, pair: tuple[bytes, bytes]) -> None:
    assert verify(data, *pair) is None


@hypothesis.given(inputs.mutations(GENUINE, max_edits=6), KEYS)
def test_mutated_bundle_never_verifies(data: bytes, pair: tuple[bytes, bytes]) -> None:
    assert verify(data, *pair) is None


@hypothesis.given(
    st.sampled_from([RECORD_JWS, "x.y.z"]) | st.text(max_size=40),
    st.sampled_from([b64.encode(TOKEN), b64.encode(DEVICE.token(SLOT + 1))]) | st.text(max_size=8),
    st.sampled_from([PROOF_JWS, DEVICE.next_proof(iat_ms=IAT_MS + 20_000)]) | st.text(max_size=40),
    st.sampled_from([evidence.BUNDLE_TYPE]) | st.text(max_size=8),
)
def test_canonical_bundles_of_any_members(record: str, token: str, proof: str, kind: str) -> None:
    """Canonical bytes get past the format checks to the signatures and links."""
    verified = verify(
        bundle_of(record, token, proof, kind), DEVICE.signing.public, CENTRAL_KEY.public
    )
    if verified is not None:
        assert (record, token, proof, kind) == (
            RECORD_JWS,
            b64.encode(TOKEN),
            PROOF_JWS,
            evidence.BUNDLE_TYPE,
        )


@hypothesis.given(
    st.one_of(
        inputs.objects_with([*RECORD, "token", "proof_hash"]),
        st.builds(
            lambda field, value: {
                **RECORD,
                "token": b64.encode(TOKEN),
                "proof_hash": json.loads(jws.parse(RECORD_JWS, 1 << 16).payload)["proof_hash"],
                field: value,
            },
            st.sampled_from([*RECORD, "token", "proof_hash"]),
            inputs.json_values(),
        ),
    )
)
def test_countersigned_records_of_any_shape(record: dict[str, object]) -> None:
    """Central's signature over a record of the wrong shape: rejected as a bad record or a
    mismatch, and accepted only when it names the genuine slot, token and proof."""
    payload = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    record_jws = jws.sign(payload, CENTRAL_KEY, kid=evidence.RECORD_KID, typ=evidence.RECORD_TYP)
    data = bundle_of(record_jws, b64.encode(TOKEN), PROOF_JWS, evidence.BUNDLE_TYPE)
    verified = verify(data, DEVICE.signing.public, CENTRAL_KEY.public)
    if verified is not None:
        for field in ("site", "room", "device", "slot"):
            assert record[field] == RECORD[field]
        assert verified.proof.qr == record["token"]
