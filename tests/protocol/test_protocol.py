"""Round trips and tampering of every field: proofs, QR tokens, enrollment, names, topics."""

from __future__ import annotations

import json
import os

import pytest

from edge_agent.protocol import b64
from edge_agent.protocol import chain
from edge_agent.protocol import enroll
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import names
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from edge_agent.protocol import topics
from edge_agent.protocol import totp

KEY = keys.SigningKey(bytes(range(32)))
OTHER = keys.SigningKey(bytes(range(1, 33)))


def make_claims(**overrides: object) -> proof.Claims:
    iat = 1_763_800_000_123
    slot = slots.slot_of(iat, 20)
    base: dict[str, object] = {
        "site": "campus",
        "room": "a-101",
        "device": "pi-a101",
        "seq": 7,
        "boot": "0123456789abcdef",
        "iat": iat,
        "clock": {"source": "ntp", "uncertainty_ms": 20},
        "slot": slot,
        "slot_s": 20,
        "otp_step_s": 30,
        "qr": b64.encode(qrtoken.sign(KEY, "campus", "pi-a101", "a-101", slot)),
        "prev": chain.GENESIS,
        "env": {
            "wifi": [
                {
                    "bssid": "aa:bb:cc:dd:ee:ff",
                    "ssid": "eduroam",
                    "rssi": -50,
                    "channel": 6,
                    "seen": 3,
                }
            ]
        },
    }
    base.update(overrides)
    return proof.Claims.model_validate(base)


def test_names() -> None:
    assert names.validate("site", "campus-1") == "campus-1"
    for bad in ["", "-x", "A", "a/b", "a\nb", "a" * 64, "é", "a+b", "a#"]:
        assert not names.is_valid(bad)
        with pytest.raises(names.NameError_, match="site"):
            names.validate("site", bad)
    with pytest.raises(names.NameError_):
        names.validate("room", 5)


def test_topics_round_trip() -> None:
    name = topics.topic("campus", "pi-1", "proof")
    assert name == "roomproof/v1/campus/pi-1/proof"
    assert topics.parse(name) == topics.Topic("campus", "pi-1", "proof")
    assert topics.shared("central", "proof") == "$share/central/roomproof/v1/+/+/proof"
    for bad in [
        "roomproof/v1/campus/pi-1/other",
        "x/v1/a/b/proof",
        "roomproof/v1/A/b/proof",
        "roomproof/v1/a/b/c/proof",
    ]:
        with pytest.raises(ValueError):
            topics.parse(bad)
    with pytest.raises(ValueError):
        topics.topic("campus", "pi/1", "proof")


def test_b64_strict() -> None:
    assert b64.decode(b64.encode(b"\x00\xffab")) == b"\x00\xffab"
    for bad in ["ab==", "a", "ab+/", "ab c", "AB"]:
        with pytest.raises(ValueError):
            b64.decode(bad)


def test_proof_round_trip_and_chain() -> None:
    claims = make_claims()
    compact = proof.sign(claims, KEY)
    parsed, decoded = proof.decode(compact)
    assert decoded == claims
    assert parsed.kid == "pi-a101"
    assert jws.verify(parsed, KEY.public)
    assert not jws.verify(parsed, OTHER.public)
    following = proof.sign(make_claims(seq=8, prev=chain.link(compact)), KEY)
    assert proof.decode(following)[1].prev == chain.link(compact)
    assert len(chain.link(compact)) == 64


def _tamper_payload(compact: str, mutate: object) -> str:
    header, payload, signature = compact.split(".")
    data = json.loads(b64.decode(payload))
    mutate(data)  # type: ignore[operator]
    return ".".join([header, b64.encode(json.dumps(data).encode()), signature])


@pytest.mark.parametrize(
    "field,value",
    [
        ("site", "other"),
        ("room", "b-202"),
        ("device", "pi-other"),
        ("seq", 8),
        ("boot", "fedcba9876543210"),
        ("iat", 1),
        ("slot", 1),
        ("slot_s", 30),
        ("otp_step_s", 60),
        ("prev", "1" * 64),
        ("clock", {"source": "gps", "uncertainty_ms": 1}),
        ("env", {}),
        ("qr", b64.encode(b"\x01" * 64)),
    ],
)
def test_every_field_tampered_is_detected(field: str, value: object) -> None:
    compact = proof.sign(make_claims(), KEY)
    forged = _tamper_payload(compact, lambda data: data.__setitem__(field, value))
    try:
        parsed, _ = proof.decode(forged)
    except proof.ProofError:
        return  # a device/kid mismatch is caught before the signature
    assert not jws.verify(parsed, KEY.public)


def test_header_and_signature_tampering() -> None:
    compact = proof.sign(make_claims(), KEY)
    header, payload, signature = compact.split(".")
    other_header = b64.encode(b'{"alg":"EdDSA","kid":"pi-a101","typ":"roomproof-proof+jws","x":1}')
    with pytest.raises(proof.ProofError) as info:
        proof.decode(f"{other_header}.{payload}.{signature}")
    assert info.value.reason == "bad_header"
    none_alg = b64.encode(b'{"alg":"none","kid":"pi-a101","typ":"roomproof-proof+jws"}')
    with pytest.raises(proof.ProofError):
        proof.decode(f"{none_alg}.{payload}.{signature}")
    flipped = bytearray(b64.decode(signature))
    flipped[0] ^= 1
    parsed, _ = proof.decode(f"{header}.{payload}.{b64.encode(bytes(flipped))}")
    assert not jws.verify(parsed, KEY.public)


@pytest.mark.parametrize(
    "blob,reason",
    [
        (b"", "malformed"),
        (b"a.b", "malformed"),
        (os.urandom(200), "malformed"),
        (b"x" * (proof.MAX_BYTES + 1), "oversize"),
        (b"e30.e30.AAAA", "bad_header"),
    ],
)
def test_garbage_is_rejected_with_reason(blob: bytes, reason: str) -> None:
    with pytest.raises(proof.ProofError) as info:
        proof.decode(blob)
    assert info.value.reason == reason


def _set_unused_bit(text: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return text[:-1] + alphabet[alphabet.index(text[-1]) | 1]


def test_schema_rejections() -> None:
    compact = proof.sign(make_claims(), KEY)
    for mutate in (
        lambda d: d.__setitem__("seq", "7"),
        lambda d: d.__setitem__("extra", 1),
        lambda d: d.pop("prev"),
        lambda d: d.__setitem__("site", "Bad Site"),
        lambda d: d.__setitem__("slot_s", 1),
        # The same 64 signature bytes with a non-zero unused bit: strict base64url refuses it
        # (before, it passed the schema and central's strict decode raised mid-verification).
        lambda d: d.__setitem__("qr", _set_unused_bit(d["qr"])),
    ):
        header, payload, _ = _tamper_payload(compact, mutate).split(".")
        signing_input = f"{header}.{payload}".encode()
        resigned = f"{header}.{payload}.{b64.encode(KEY.sign(signing_input))}"
        with pytest.raises(proof.ProofError) as info:
            proof.decode(resigned)
        assert info.value.reason == "schema"


def test_qr_token_round_trip() -> None:
    signature = qrtoken.sign(KEY, "campus", "pi-a101", "a-101", 88_190_000)
    link = qrtoken.url("https://attend.example.edu/", "campus", "pi-a101", 88_190_000, signature)
    assert link.startswith("https://attend.example.edu/c/campus/pi-a101/88190000.")
    assert len(link) < 160
    for text in (link, qrtoken.parse(link).path):
        token = qrtoken.parse(text)
        assert (token.site, token.device, token.slot) == ("campus", "pi-a101", 88_190_000)
        assert qrtoken.verify(KEY.public, "campus", "pi-a101", "a-101", token.slot, token.signature)
    assert not qrtoken.verify(KEY.public, "campus", "pi-a101", "b-202", 88_190_000, signature)
    assert not qrtoken.verify(KEY.public, "campus", "pi-a101", "a-101", 88_190_001, signature)
    assert not qrtoken.verify(KEY.public, "other", "pi-a101", "a-101", 88_190_000, signature)
    assert not qrtoken.verify(OTHER.public, "campus", "pi-a101", "a-101", 88_190_000, signature)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "https://x/c/campus/pi/12.abc",
        "/c/Campus/pi/1." + "A" * 86,
        "/c/campus/pi/-1." + "A" * 86,
        "/c/campus/pi/1." + "A" * 86 + "/extra",
        "https://x/other",
        "x" * 5000,
    ],
)
def test_qr_token_parse_rejects(text: str) -> None:
    with pytest.raises(qrtoken.TokenError):
        qrtoken.parse(text)


def test_totp_key_agreement() -> None:
    device = keys.AgreementKey.generate()
    central = keys.AgreementKey.generate()
    on_device = totp.derive_key(device, central.public, "campus", "pi-a101")
    on_central = totp.derive_key(central, device.public, "campus", "pi-a101")
    assert on_device == on_central
    assert totp.derive_key(central, device.public, "campus", "pi-other") != on_central
    with pytest.raises(ValueError):
        central.shared(bytes(32))


def test_enrollment_round_trip() -> None:
    code = b64.encode(os.urandom(32))
    device = keys.SigningKey.generate()
    agreement = keys.AgreementKey.generate()
    payload = enroll.make_request(
        code, "campus", "a-101", "pi-a101", device.public, agreement.public
    )
    request = enroll.parse_request(payload)
    assert request.ed25519 == device.public
    assert enroll.check_mac(request, code)
    assert not enroll.check_mac(request, b64.encode(os.urandom(32)))
    data = json.loads(payload)
    assert code not in payload.decode()
    data["room"] = "b-202"
    assert not enroll.check_mac(enroll.parse_request(json.dumps(data).encode()), code)
    for bad in (b"", b"{}", b"[1]", os.urandom(64), b"x" * 5000):
        with pytest.raises(enroll.EnrollError):
            enroll.parse_request(bad)
    central = keys.SigningKey.generate()
    reply = enroll.sign_reply(central, {"v": 1, "type": "enrolled", "nonce": request.nonce})
    assert enroll.verify_reply(reply, central.public)["nonce"] == request.nonce
    with pytest.raises(enroll.EnrollError):
        enroll.verify_reply(reply, device.public)
