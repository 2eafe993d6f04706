"""docs/protocol.md's worked examples are what the code produces, byte for byte, and valid.

Each example is a fenced block after a `<!-- example: NAME FORMAT -->` marker; the test reads
every one out of the document, requires exactly the set that `tests.protocol.examples`
computes from fixed keys and times, and compares the bytes. Then it has the code's own
verifiers accept each signed example, so the document cannot show a well-formed forgery.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import re

import pytest

from central.checkin import evidence
from central.checkin import keychain
from edge_agent.protocol import b64
from edge_agent.protocol import chain
from edge_agent.protocol import command
from edge_agent.protocol import enroll
from edge_agent.protocol import jws
from edge_agent.protocol import keychange
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken
from edge_agent.protocol import report
from edge_agent.protocol import totp
from tests.protocol import examples as ex

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
MARKER = re.compile(
    r"^<!-- example: (?P<name>[a-z0-9-]+) (?P<form>text|wrapped) -->\n```\n(?P<body>.*?)\n```$",
    re.M | re.S,
)


@functools.cache
def documented() -> dict[str, tuple[str, str]]:
    """name -> (format, value) as a reader of the document gets them."""
    text = DOC.read_text(encoding="utf-8")
    found: dict[str, tuple[str, str]] = {}
    for match in MARKER.finditer(text):
        name, form, body = match["name"], match["form"], match["body"]
        assert name not in found, f"example {name} appears twice"
        if form == "wrapped":
            lines = body.split("\n")
            assert all(len(line) == ex.WRAP for line in lines[:-1]), name
            assert 0 < len(lines[-1]) <= ex.WRAP, name
            found[name] = (form, "".join(lines))
        else:
            found[name] = (form, body)
    markers = re.findall(r"^<!-- example:", text, re.M)
    assert len(markers) == len(found), "a marker without a well-formed block"
    return found


COMPUTED = ex.build()


def test_the_document_shows_every_example_and_no_other() -> None:
    assert sorted(documented()) == sorted(COMPUTED)


@pytest.mark.parametrize("name", sorted(COMPUTED))
def test_each_example_is_the_codes_output_byte_for_byte(name: str) -> None:
    form, value = COMPUTED[name]
    shown = documented().get(name)
    assert shown == (form, value), f"docs/protocol.md example {name} is stale"
    assert shown[1].encode("utf-8") == value.encode("utf-8")


def doc(name: str) -> str:
    return documented()[name][1]


def test_keys_follow_from_the_documented_seeds() -> None:
    for who in ("device", "central"):
        signing = keys.SigningKey(bytes.fromhex(doc(f"{who}-ed25519-seed")))
        agreement = keys.AgreementKey(bytes.fromhex(doc(f"{who}-x25519-private")))
        assert b64.encode(signing.public) == doc(f"{who}-ed25519-public")
        assert b64.encode(agreement.public) == doc(f"{who}-x25519-public")


def test_the_qr_example_verifies_and_parses() -> None:
    device = b64.decode(doc("device-ed25519-public"))
    message = doc("qr-message").encode()
    assert message == bytes.fromhex(doc("qr-message-hex"))
    site, device_name, room, slot = message.decode().split("\n")[1:]
    signature = b64.decode(doc("qr-signature"))
    assert qrtoken.verify(device, site, device_name, room, int(slot), signature)
    token = qrtoken.parse(doc("qr-url"))
    assert (token.site, token.device, token.slot, token.signature) == (
        site,
        device_name,
        int(slot),
        signature,
    )


def test_the_strict_base64url_example_of_the_text() -> None:
    """§1.3 names the signature's last characters and one that differs in an unused bit."""
    text = DOC.read_text(encoding="utf-8")
    good = doc("qr-signature")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    bad = good[:-1] + alphabet[alphabet.index(good[-1]) | 1]
    assert f"`...{good[-5:]}`" in text and f"`...{bad[-5:]}`" in text
    assert b64.decode(good)
    with pytest.raises(ValueError, match="non-zero trailing bits"):
        b64.decode(bad)


def test_the_totp_example() -> None:
    device_x = keys.AgreementKey(bytes.fromhex(doc("device-x25519-private")))
    central_x = keys.AgreementKey(bytes.fromhex(doc("central-x25519-private")))
    assert device_x.shared(central_x.public).hex() == doc("totp-x25519-shared")
    key = totp.derive_key(central_x, device_x.public, "campus", "pi-a101")
    assert key.hex() == doc("totp-key")
    for line in doc("totp-codes").split("\n"):
        fields = dict(part.split("=") for part in line.split())
        unix_s = int(fields["unix_s"])
        for digest in ("sha1", "sha256"):
            assert totp.matches(key, fields[digest], unix_s, 30, 0, digest) == int(
                fields["counter"]
            )


def test_the_proof_example_verifies() -> None:
    compact = doc("proof-jws")
    parsed, claims = proof.decode(compact)
    assert jws.verify(parsed, b64.decode(doc("device-ed25519-public")))
    assert parsed.header == json.loads(doc("proof-header"))
    assert parsed.payload == doc("proof-payload").encode("utf-8")
    assert claims.qr == doc("qr-signature") and claims.prev == chain.GENESIS
    assert chain.link(compact) == doc("proof-link")


@pytest.mark.parametrize(
    "name,typ",
    [
        ("status", report.STATUS),
        ("telemetry", report.TELEMETRY),
        ("command-result", report.COMMAND_RESULT),
    ],
)
def test_the_report_examples_verify(name: str, typ: str) -> None:
    parsed, claims = report.decode(doc(f"{name}-jws").encode(), frozenset({typ}))
    assert jws.verify(parsed, b64.decode(doc("device-ed25519-public")))
    assert parsed.payload == doc(f"{name}-payload").encode()
    assert claims.device == "pi-a101" and claims.boot == ex.BOOT


def test_the_command_example_verifies_and_its_result_names_it() -> None:
    central = b64.decode(doc("central-ed25519-public"))
    payload = json.loads(doc("command-payload"))
    order = command.verify(
        doc("command-jws").encode(), central, "campus", "pi-a101", payload["iat"]
    )
    assert order.kind == "show_message" and order.exp - order.iat == 3_600_000
    assert json.loads(doc("command-result-payload"))["nonce"] == order.nonce


def test_the_enrollment_examples_verify() -> None:
    request = enroll.parse_request(doc("enroll-request").encode())
    assert enroll.check_mac(request, doc("enroll-code"))
    assert not enroll.check_mac(request, b64.encode(bytes(32)))
    assert enroll.mac_input(
        request.site,
        request.room,
        request.device,
        b64.encode(request.ed25519),
        b64.encode(request.x25519),
        request.nonce,
        request.ts,
    ).decode() == doc("enroll-mac-input")
    reply = enroll.verify_reply(doc("enroll-reply-jws"), b64.decode(doc("central-ed25519-public")))
    assert reply == json.loads(doc("enroll-reply-payload")) and reply["nonce"] == request.nonce
    assert not request.signed


def test_the_signed_enrollment_request_example_verifies() -> None:
    """The request as published: a JWS whose payload is the request's exact JSON, signed by
    the key it carries (checked by `parse_request`, and here directly)."""
    compact = doc("enroll-request-jws")
    signed = enroll.parse_request(compact.encode())
    assert signed.signed and enroll.check_mac(signed, doc("enroll-code"))
    parsed = jws.parse(compact, enroll.MAX_BYTES)
    assert parsed.header == json.loads(doc("enroll-request-header"))
    assert parsed.payload == doc("enroll-request").encode()
    assert jws.verify(parsed, b64.decode(doc("device-ed25519-public")))
    assert signed == dataclasses.replace(enroll.parse_request(parsed.payload), signed=True)


def test_the_key_change_example_verifies() -> None:
    parsed, change = keychange.decode(doc("keychange-jws").encode())
    assert keychange.verify(parsed, change, b64.decode(doc("device-ed25519-public")))
    assert b64.encode(change.ed25519) == doc("new-ed25519-public")
    assert b64.encode(change.x25519) == doc("new-x25519-public")
    assert keychange.pop_input(change).decode() == doc("keychange-pop-input")
    assert parsed.payload == doc("keychange-payload").encode()


def test_the_evidence_example_verifies() -> None:
    bundle = doc("bundle").encode()
    verified = evidence.verify_bundle(bundle, None, b64.decode(doc("central-ed25519-public")))
    assert verified.device_kid == doc("device-kid") == verified.record["device_kid"]
    (entry,) = json.loads(bundle)["key"]["chain"]
    assert entry["evidence"] == doc("enroll-request-jws")
    assert entry["ed25519"] == doc("device-ed25519-public")
    assert verified.record == json.loads(doc("record-payload"))
    assert json.loads(bundle)["record"] == doc("record-jws")
    assert json.loads(bundle)["proof"] == doc("proof-jws")
    assert verified.record["token"] == doc("qr-signature")
    assert verified.record["proof_hash"] == doc("proof-link")
    assert hashlib.sha256(bundle).hexdigest() == doc("bundle-sha256")


def test_the_rotated_key_chain_example_verifies() -> None:
    """A chain from the enrolled key through the example key change to the new key, which
    signs from the change's from_seq on."""
    value = json.loads(doc("key-chain-rotated"))
    assert evidence.canonical_json(value).decode() == doc("key-chain-rotated")
    checked = keychain.verify(value, "campus", "pi-a101", ex.KEYCHANGE_FROM_SEQ)
    assert checked.key == b64.decode(doc("new-ed25519-public"))
    assert checked.kid == doc("new-kid")
    assert [e["evidence"] for e in value["chain"]] == [
        doc("enroll-request-jws"),
        doc("keychange-jws"),
    ]
    with pytest.raises(keychain.ChainError, match="after the proof"):
        keychain.verify(value, "campus", "pi-a101", ex.KEYCHANGE_FROM_SEQ - 1)
