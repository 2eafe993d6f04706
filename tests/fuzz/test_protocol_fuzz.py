"""Property tests of the wire-protocol decoders: any input gives a result or the decoder's own
error type, and a changed byte of a signed message never verifies as something else.

Central feeds these decoders whatever arrives on MQTT and HTTP, so any other exception is a
crash path (or an `internal` rejection) that an attacker can trigger at will.
"""

from __future__ import annotations

import json

import hypothesis
import pytest
from hypothesis import strategies as st

from edge_agent.protocol import b64
from edge_agent.protocol import chain
from edge_agent.protocol import enroll
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import names
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken
from edge_agent.protocol import report
from edge_agent.protocol import slots
from edge_agent.protocol import topics
from edge_agent.protocol import totp
from tests.fuzz import inputs

DEVICE_KEY = keys.SigningKey.generate()
CENTRAL_KEY = keys.SigningKey.generate()
JWS_REASONS = {"oversize", "malformed", "bad_header"}
PROOF_REASONS = JWS_REASONS | {"schema"}
B64_TEXT = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ .")


def _claims(seq: int = 3) -> proof.Claims:
    iat = 1_763_800_000_123
    slot = slots.slot_of(iat, 20)
    return proof.Claims.model_validate(
        {
            "site": "campus",
            "room": "a-101",
            "device": "pi-a101",
            "seq": seq,
            "boot": "0123456789abcdef",
            "iat": iat,
            "clock": {"source": "gps", "uncertainty_ms": 120},
            "slot": slot,
            "slot_s": 20,
            "otp_step_s": 30,
            "qr": b64.encode(qrtoken.sign(DEVICE_KEY, "campus", "pi-a101", "a-101", slot)),
            "prev": chain.link("previous"),
            "env": {
                "gps": {
                    "lat": 48.15,
                    "lon": 11.57,
                    "accuracy_m": 4.5,
                    "fix": "3d",
                    "satellites": 9,
                },
                "wifi": [{"bssid": "aa:bb:cc:dd:ee:ff", "ssid": "eduroam", "rssi": -50, "seen": 3}],
                "ble": [
                    {"kind": "ibeacon", "id": "x/1/2", "rssi": -70, "tx_power": -59, "seen": 2}
                ],
                "window_s": 20,
            },
        }
    )


CLAIMS = _claims()
GENUINE = proof.sign(CLAIMS, DEVICE_KEY)


def _jws_parts() -> st.SearchStrategy[str]:
    """Three-part compact forms whose parts are base64url of JSON or of random bytes."""
    header = st.one_of(
        inputs.objects_with(["alg", "kid", "typ"]).map(json.dumps),
        st.fixed_dictionaries(
            {"alg": st.just("EdDSA"), "kid": st.text(max_size=8), "typ": st.text(max_size=24)}
        ).map(json.dumps),
        st.just(json.dumps({"alg": "EdDSA", "kid": "pi-a101", "typ": proof.TYP})),
    )
    payload = st.one_of(
        inputs.objects_with(CLAIMS.model_dump().keys()).map(json.dumps),
        inputs.json_values().map(json.dumps),
    )
    part = st.binary(max_size=80).map(b64.encode)
    return st.tuples(
        header.map(lambda text: b64.encode(text.encode())) | part,
        payload.map(lambda text: b64.encode(text.encode())) | part,
        st.binary(min_size=64, max_size=64).map(b64.encode) | part,
    ).map(".".join)


# -- base64url -----------------------------------------------------------------------------
@hypothesis.given(st.text() | st.binary() | B64_TEXT)
def test_b64_decode_is_strict_and_canonical(text: str | bytes) -> None:
    try:
        data = b64.decode(text)
    except ValueError:
        return
    as_text = text.decode("ascii") if isinstance(text, bytes) else text
    assert b64.encode(data) == as_text


@hypothesis.given(st.binary())
def test_b64_round_trip(data: bytes) -> None:
    assert b64.decode(b64.encode(data)) == data


# -- topics --------------------------------------------------------------------------------
@hypothesis.given(
    st.text()
    | st.lists(
        st.sampled_from(["roomproof", "v1", "campus", "pi-a101", "proof", "cmd", "", "+", "#"])
        | st.text(max_size=6),
        max_size=7,
    ).map("/".join)
)
def test_topic_parse(value: str) -> None:
    try:
        where = topics.parse(value)
    except ValueError:
        return
    assert topics.topic(where.site, where.device, where.kind) == value


# -- JWS and presence proofs ---------------------------------------------------------------
@hypothesis.given(
    st.text() | st.binary() | _jws_parts() | _jws_parts().map(str.encode),
    st.integers(min_value=0, max_value=20_000),
)
def test_jws_parse(compact: str | bytes, max_bytes: int) -> None:
    try:
        parsed = jws.parse(compact, max_bytes)
    except jws.JWSError as exc:
        assert exc.reason in JWS_REASONS
        return
    assert parsed.header["alg"] == jws.ALG
    assert isinstance(parsed.kid, str)
    assert len(parsed.signature) == keys.SIGNATURE_BYTES
    text = compact.decode("ascii") if isinstance(compact, bytes) else compact
    assert text.startswith(parsed.signing_input.decode("ascii") + ".")


@hypothesis.given(st.text() | st.binary() | _jws_parts() | _jws_parts().map(str.encode))
def test_proof_decode(compact: str | bytes) -> None:
    try:
        parsed, claims = proof.decode(compact)
    except proof.ProofError as exc:
        assert exc.reason in PROOF_REASONS
        return
    assert parsed.kid == claims.device
    assert not jws.verify(parsed, DEVICE_KEY.public)  # nobody here signed random input


@hypothesis.given(
    st.one_of(
        inputs.objects_with(CLAIMS.model_dump().keys()),
        st.builds(
            lambda field, value: {**CLAIMS.model_dump(), field: value},
            st.sampled_from(sorted(CLAIMS.model_dump())),
            inputs.json_values(),
        ),
    )
)
def test_proof_decode_signed_claims_of_any_shape(claims: dict[str, object]) -> None:
    """Genuinely signed payloads reach schema validation: bad claims are `schema` errors."""
    compact = jws.sign(json.dumps(claims).encode(), DEVICE_KEY, kid="pi-a101", typ=proof.TYP)
    try:
        parsed, decoded = proof.decode(compact)
    except proof.ProofError as exc:
        assert exc.reason in PROOF_REASONS
        return
    assert jws.verify(parsed, DEVICE_KEY.public)
    assert decoded.device == "pi-a101"


# -- signed reports (status, telemetry, command results) -------------------------------------
REPORT_REASONS = PROOF_REASONS | {"unsigned"}
TELEMETRY = report.Telemetry(
    site="campus",
    device="pi-a101",
    boot="0123456789abcdef",
    iat=1_763_800_000_123,
    uptime_s=7,
    outbox_depth={"proof": 2, "telemetry": 0},
    sensors={"gps": {"source": "gpsd", "status": "ok"}},
)
TELEMETRY_SIGNED = report.sign(TELEMETRY, DEVICE_KEY)


@hypothesis.given(
    st.binary()
    | _jws_parts().map(str.encode)
    | st.builds(
        lambda claims, typ: jws.sign(json.dumps(claims).encode(), DEVICE_KEY, "pi-a101", typ),
        inputs.objects_with([*TELEMETRY.model_dump(), "state", "nonce", "outcome"]),
        st.sampled_from(sorted(report.MODELS)),
    ).map(str.encode)
)
def test_report_decode(compact: bytes) -> None:
    try:
        parsed, claims = report.decode(compact, frozenset(report.MODELS))
    except report.ReportError as exc:
        assert exc.reason in REPORT_REASONS
        return
    assert claims.device == parsed.kid


@hypothesis.given(inputs.mutations(TELEMETRY_SIGNED))
def test_mutated_report_never_verifies_as_something_else(mutated: bytes) -> None:
    try:
        parsed, claims = report.decode(mutated, frozenset(report.MODELS))
    except report.ReportError as exc:
        assert exc.reason in REPORT_REASONS
        return
    if jws.verify(parsed, DEVICE_KEY.public):
        assert claims == TELEMETRY


@hypothesis.given(st.integers(min_value=1, max_value=5000), st.sampled_from(["[", "{"]))
def test_proof_decode_deeply_nested_payload(depth: int, kind: str) -> None:
    payload = inputs.nested(depth, kind).encode()
    compact = jws.sign(payload, DEVICE_KEY, kid="pi-a101", typ=proof.TYP)
    with pytest.raises(proof.ProofError):
        proof.decode(compact, max_bytes=1 << 20)


@hypothesis.given(st.integers(min_value=1, max_value=5000), st.sampled_from(["[", "{"]))
@hypothesis.example(depth=3000, kind="[")
def test_jws_parse_deeply_nested_header(depth: int, kind: str) -> None:
    header = b64.encode(inputs.nested(depth, kind).encode())
    compact = f"{header}.{b64.encode(b'{}')}.{b64.encode(bytes(64))}"
    with pytest.raises(jws.JWSError):
        jws.parse(compact, 1 << 20)
    with pytest.raises(proof.ProofError):
        proof.decode(compact, 1 << 20)


@hypothesis.given(inputs.mutations(GENUINE.encode()))
def test_mutated_proof_never_verifies_as_something_else(mutated: bytes) -> None:
    """Byte edits anywhere in a signed proof: rejected, or (if it still verifies) the very
    same payload and claims. A change to the payload must never verify."""
    try:
        parsed, claims = proof.decode(mutated)
    except proof.ProofError as exc:
        assert exc.reason in PROOF_REASONS
        return
    if jws.verify(parsed, DEVICE_KEY.public):
        assert parsed.payload == CLAIMS.model_dump_json(exclude_none=True).encode()
        assert claims == CLAIMS


@hypothesis.given(inputs.mutations(GENUINE.encode(), ascii_only=True))
def test_mutated_proof_text_never_verifies(mutated: bytes) -> None:
    """The same with edits that keep the text ASCII, so more mutants get past the parser."""
    try:
        parsed, claims = proof.decode(mutated.decode("ascii"))
    except proof.ProofError:
        return
    assert not jws.verify(parsed, DEVICE_KEY.public) or claims == CLAIMS


# -- QR tokens -----------------------------------------------------------------------------
_SIG = b64.encode(qrtoken.sign(DEVICE_KEY, "campus", "pi-a101", "a-101", 88_190_000))
_PATHS = st.tuples(
    st.sampled_from(["", "/x", "/c", "https://h/c"]) | st.text(max_size=6),
    st.sampled_from(["/c/", "/c//", "c/", "/C/"]),
    st.sampled_from(["campus", "-x", "A"]) | st.text(max_size=6),
    st.sampled_from(["/"]) | st.text(max_size=2),
    st.sampled_from(["pi-a101"]) | st.text(max_size=6),
    st.sampled_from(["/"]) | st.text(max_size=2),
    st.integers(min_value=-5, max_value=10**16).map(str) | st.text(max_size=4),
    st.sampled_from(["."]) | st.text(max_size=2),
    st.sampled_from([_SIG, _SIG[:-1] + "B", _SIG[:85]]) | B64_TEXT,
    st.sampled_from(["", "/", "?q=1", "#f"]) | st.text(max_size=3),
).map("".join)


@hypothesis.given((_PATHS | st.text()).filter(lambda text: "://" not in text))
def test_qrtoken_parse_path(text: str) -> None:
    """Paths as scanned from /c/... links (full URLs: test_qrtoken_parse_url)."""
    try:
        token = qrtoken.parse(text)
    except qrtoken.TokenError:
        return
    assert names.is_valid(token.site) and names.is_valid(token.device)
    assert len(token.signature) == keys.SIGNATURE_BYTES
    assert f"/c/{token.site}/{token.device}/" in text
    assert qrtoken.parse(token.path) == token


@hypothesis.given(
    st.tuples(
        st.sampled_from(["http://", "https://", "x://", "://"]),
        st.text(alphabet="ab.:[]@%\uff03", max_size=8),
        _PATHS,
    ).map("".join)
)
@hypothesis.example(text=f"http://[/c/campus/pi-a101/88190000.{_SIG}")
def test_qrtoken_parse_url(text: str) -> None:
    try:
        token = qrtoken.parse(text)
    except qrtoken.TokenError:
        return
    assert f"/c/{token.site}/{token.device}/" in text
    assert qrtoken.parse(token.path) == token


@hypothesis.given(
    st.binary(max_size=40) | st.just(DEVICE_KEY.public),
    st.text(max_size=8) | st.just("campus"),
    st.text(max_size=8) | st.just("pi-a101"),
    st.text(max_size=8) | st.just("a-101"),
    st.integers() | st.just(88_190_000),
    st.binary(max_size=80) | st.just(b64.decode(_SIG)),
)
def test_qrtoken_verify_only_answers(
    public: bytes, site: str, device: str, room: str, slot: int, signature: bytes
) -> None:
    genuine = (public, site, device, room, slot, signature) == (
        DEVICE_KEY.public,
        "campus",
        "pi-a101",
        "a-101",
        88_190_000,
        b64.decode(_SIG),
    )
    assert qrtoken.verify(public, site, device, room, slot, signature) is genuine


# -- one-time codes ------------------------------------------------------------------------
@hypothesis.given(
    st.text(max_size=12)
    | st.text(alphabet="0123456789", min_size=6, max_size=6)
    | st.text(alphabet="0123456789٠١٢٣٤٥٦٧٨٩²", min_size=6, max_size=6),
    st.floats(min_value=0, max_value=2**40),
    st.sampled_from(sorted(totp.DIGESTS)),
    st.integers(min_value=10, max_value=300),
)
def test_totp_matches_any_code_text(code: str, unix_s: float, digest: str, step: int) -> None:
    key = bytes(range(32))
    counter = totp.matches(key, code, unix_s, step, window=1, digest=digest)
    if counter is not None:
        assert totp.hotp(key, counter, 6, digest) == code
        assert abs(counter - totp.counter_at(unix_s, step)) <= 1


# -- enrollment ----------------------------------------------------------------------------
_CODE = b64.encode(bytes(range(32)))
_REQUEST = enroll.make_request(
    _CODE, "campus", "a-101", "pi-a101", DEVICE_KEY.public, keys.AgreementKey.generate().public
)
_REQUEST_KEYS = set(json.loads(_REQUEST))


@hypothesis.given(
    st.binary(max_size=200)
    | inputs.json_values().map(lambda value: json.dumps(value).encode())
    | inputs.objects_with(_REQUEST_KEYS).map(lambda value: json.dumps(value).encode())
    | st.builds(
        lambda field, value: json.dumps({**json.loads(_REQUEST), field: value}).encode(),
        st.sampled_from(sorted(_REQUEST_KEYS)),
        inputs.json_values(),
    )
    | inputs.mutations(_REQUEST)
)
def test_enroll_parse_request(payload: bytes) -> None:
    try:
        request = enroll.parse_request(payload)
    except enroll.EnrollError:
        return
    assert len(request.ed25519) == len(request.x25519) == len(request.mac) == 32
    assert all(names.is_valid(n) for n in (request.site, request.room, request.device))
    if payload != _REQUEST:
        assert not enroll.check_mac(request, _CODE) or (json.loads(payload) == json.loads(_REQUEST))


@hypothesis.given(st.integers(min_value=1, max_value=2000), st.sampled_from(["[", "{"]))
@hypothesis.example(depth=2000, kind="[")
def test_enroll_parse_request_deeply_nested(depth: int, kind: str) -> None:
    with pytest.raises(enroll.EnrollError):
        enroll.parse_request(inputs.nested(depth, kind).encode())


_REPLY = enroll.sign_reply(CENTRAL_KEY, {"v": 1, "type": "enrolled", "nonce": "n", "config": {}})


@hypothesis.given(
    st.text() | st.binary() | _jws_parts() | inputs.mutations(_REPLY.encode()),
    st.sampled_from([CENTRAL_KEY.public, DEVICE_KEY.public, b"", bytes(32)]),
)
def test_enroll_verify_reply(compact: str | bytes, public: bytes) -> None:
    try:
        data = enroll.verify_reply(compact, public)
    except enroll.EnrollError:
        return
    assert public == CENTRAL_KEY.public
    assert data == json.loads(jws.parse(_REPLY, enroll.MAX_BYTES).payload)


def test_genuine_messages_still_decode() -> None:
    """The fixtures the mutations start from are valid: otherwise every property is vacuous."""
    parsed, claims = proof.decode(GENUINE)
    assert jws.verify(parsed, DEVICE_KEY.public) and claims == CLAIMS
    assert enroll.check_mac(enroll.parse_request(_REQUEST), _CODE)
    assert enroll.verify_reply(_REPLY, CENTRAL_KEY.public)["type"] == "enrolled"
    assert qrtoken.parse(f"/c/campus/pi-a101/88190000.{_SIG}").slot == 88_190_000
