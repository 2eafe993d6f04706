"""roomproof's signed objects checked by code that is not ours, from docs/protocol.md alone.

JWS with joserfc, Ed25519/X25519/HKDF with `cryptography` (not PyNaCl, which the project
uses), TOTP with pyotp, canonical JSON with the `rfc8785` package, hashes with hashlib. The
first tests take the worked examples; the end-to-end test takes what a real agent and a real
central put on a real broker and serve over HTTP: the enrollment request, proofs, status,
telemetry, a command and its result, a one-time-code check-in and its evidence bundle.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import itertools
import json
import pathlib
import signal
import subprocess
import time
import tomllib
import typing
import urllib.error
import urllib.request

import pyotp
import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jws as jose_jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from edge_agent.protocol import proof
from tests import broker as broker_mod
from tests import system
from tests.protocol import examples as ex

# joserfc warns that RFC 9864 deprecates `EdDSA`; protocol v1 emits it (docs/protocol.md §3.1).
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
SLOT_S = 5


def unb64(text: str) -> bytes:
    """Strict base64url as §1.3 says: no padding, canonical (re-encoding gives the text)."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise ValueError("not canonical base64url")
    return raw


def jose_verify(compact: str, public: bytes, typ: str, kid: str) -> dict[str, typing.Any]:
    """A JWS of the roomproof profile (§3), verified by joserfc; its payload parsed."""
    key = OKPKey.import_key(
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": base64.urlsafe_b64encode(public).rstrip(b"=").decode(),
        }
    )
    token = jose_jws.deserialize_compact(compact, key, algorithms=["EdDSA"])
    assert token.protected == {"alg": "EdDSA", "kid": kid, "typ": typ}
    payload = json.loads(token.payload)
    assert isinstance(payload, dict)
    return payload


def ed25519_ok(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def qr_message(site: str, device: str, room: str, slot: int) -> bytes:
    return f"roomproof-qr/v1\n{site}\n{device}\n{room}\n{slot}".encode()


def totp_key(own_x25519_private: bytes, peer_public: bytes, site: str, device: str) -> bytes:
    shared = x25519.X25519PrivateKey.from_private_bytes(own_x25519_private).exchange(
        x25519.X25519PublicKey.from_public_bytes(peer_public)
    )
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=f"{site}|{device}".encode(),
        info=b"roomproof/v1/totp",
    ).derive(shared)


def totp_at(key: bytes, unix_s: float, step_s: int, digest: str = "sha1") -> str:
    secret = base64.b32encode(key).decode()
    return pyotp.TOTP(secret, digits=6, digest=getattr(hashlib, digest), interval=step_s).at(unix_s)


@dataclasses.dataclass(frozen=True)
class Bundle:
    record: dict[str, typing.Any]
    proof: dict[str, typing.Any]


def thumbprint(public: bytes) -> str:
    """The key id of §13.1, as joserfc computes an RFC 7638 thumbprint."""
    x = base64.urlsafe_b64encode(public).rstrip(b"=").decode()
    return str(OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": x}).thumbprint())


def chain_key(value: dict[str, typing.Any], site: str, device: str, seq: int) -> bytes:
    """§13.3's key chain, step by step, with joserfc: the key that signed proof `seq`."""
    assert set(value) == {"chain", "kid"}
    entries = value["chain"]
    first = entries[0]
    assert (first["kind"], first["from_seq"]) == ("enroll", 1)
    request = jose_verify(
        first["evidence"], unb64(first["ed25519"]), "roomproof-enroll+jws", device
    )
    assert (request["site"], request["device"], request["ed25519"]) == (
        site,
        device,
        first["ed25519"],
    )
    assert "from_seq" not in request
    for before, entry in itertools.pairwise(entries):
        assert entry["kind"] == "rotate" and entry["from_seq"] > before["from_seq"]
        change = jose_verify(
            entry["evidence"], unb64(before["ed25519"]), "roomproof-keychange+jws", device
        )
        assert (change["prev"], change["ed25519"]) == (before["ed25519"], entry["ed25519"])
        assert (change["site"], change["device"], change["from_seq"]) == (
            site,
            device,
            entry["from_seq"],
        )
        pop_input = "\n".join(
            ["roomproof-keychange/v1"]
            + [str(change[k]) for k in ("site", "room", "device", "from_seq", "prev")]
            + [str(change[k]) for k in ("ed25519", "x25519", "iat")]
        ).encode()
        assert ed25519_ok(unb64(change["ed25519"]), pop_input, unb64(change["pop"]))
    last = unb64(entries[-1]["ed25519"])
    assert entries[-1]["from_seq"] <= seq and value["kid"] == thumbprint(last)
    return last


def verify_bundle(data: bytes, device: bytes | None, central: bytes) -> Bundle:
    """§13.2-13.3 step by step, with nothing of roomproof's code; `device` is needed only
    for a bundle without a key chain."""
    body = data[:-1] if data.endswith(b"\n") else data
    bundle = json.loads(body)
    assert set(bundle) - {"key"} == {"proof", "record", "token", "type"}
    assert rfc8785.dumps(bundle) == body, "not the canonical byte form"
    assert bundle["type"] == "roomproof-evidence/v1"
    record = jose_verify(bundle["record"], central, "roomproof-record+jws", "central")
    assert len(unb64(bundle["token"])) == 64
    parts = bundle["proof"].split(".")
    claims = json.loads(unb64(parts[1]))
    if "key" in bundle:
        signer = chain_key(bundle["key"], record["site"], record["device"], claims["seq"])
        assert device is None or device == signer
        device = signer
    assert device is not None, "a bundle without a key chain needs the device's key"
    if "device_kid" in record:
        assert record["device_kid"] == thumbprint(device)
    if "key_chain_sha256" in record:
        assert (
            record["key_chain_sha256"] == hashlib.sha256(rfc8785.dumps(bundle["key"])).hexdigest()
        )
    proof = jose_verify(bundle["proof"], device, "roomproof-proof+jws", claims["device"])
    for field in ("site", "room", "device", "slot"):
        assert record[field] == proof[field], field
    assert record["token"] == bundle["token"] == proof["qr"]
    message = qr_message(proof["site"], proof["device"], proof["room"], proof["slot"])
    assert ed25519_ok(device, message, unb64(bundle["token"]))
    assert record["proof_hash"] == hashlib.sha256(bundle["proof"].encode()).hexdigest()
    return Bundle(record, proof)


# -- the worked examples --------------------------------------------------------------------


def test_the_examples_verify_with_joserfc_and_cryptography() -> None:
    device, central = ex.DEVICE_ED.public, ex.CENTRAL_ED.public
    proof = jose_verify(ex.proof_jws(), device, "roomproof-proof+jws", "pi-a101")
    assert proof["prev"] == "0" * 64
    message = qr_message("campus", "pi-a101", "a-101", proof["slot"])
    assert ed25519_ok(device, message, unb64(proof["qr"]))
    assert proof["slot"] == proof["iat"] // (proof["slot_s"] * 1000)
    for compact, typ in (
        (ex.status_jws(), "roomproof-status+jws"),
        (ex.telemetry_jws(), "roomproof-telemetry+jws"),
        (ex.command_result_jws(), "roomproof-command-result+jws"),
    ):
        assert jose_verify(compact, device, typ, "pi-a101")["boot"] == ex.BOOT
    command = jose_verify(ex.command_jws(), central, "roomproof-command+jws", "central")
    assert command["kind"] == "show_message" and 0 < command["exp"] - command["iat"] <= 86_400_000
    reply = jose_verify(ex.enroll_reply(), central, "roomproof-cmd+jws", "central")
    assert reply["type"] == "enrolled"
    change = jose_verify(ex.keychange_jws(), device, "roomproof-keychange+jws", "pi-a101")
    pop_input = "\n".join(
        ["roomproof-keychange/v1"]
        + [str(change[k]) for k in ("site", "room", "device", "from_seq", "prev")]
        + [str(change[k]) for k in ("ed25519", "x25519", "iat")]
    ).encode()
    assert unb64(change["prev"]) == device
    assert ed25519_ok(unb64(change["ed25519"]), pop_input, unb64(change["pop"]))
    checked = verify_bundle(ex.bundle(), None, central)
    assert checked.record["student_id"] == "s1234567" and checked.proof["seq"] == 1
    assert verify_bundle(ex.bundle() + b"\n", device, central) == checked
    rotated = json.loads(ex.rotated_key_chain())
    assert chain_key(rotated, "campus", "pi-a101", ex.KEYCHANGE_FROM_SEQ) == ex.NEW_ED.public


def test_the_enrollment_mac_and_totp_examples_with_other_libraries() -> None:
    request = json.loads(ex.enroll_request())
    mac_input = "\n".join(
        ["roomproof-enroll/v1"]
        + [str(request[k]) for k in ("site", "room", "device", "ed25519", "x25519", "nonce", "ts")]
    ).encode()
    expected = hmac.new(unb64(ex.ENROLLMENT_CODE), mac_input, hashlib.sha256).digest()
    assert unb64(request["mac"]) == expected
    device_side = totp_key(ex.DEVICE_X.private, ex.CENTRAL_X.public, "campus", "pi-a101")
    central_side = totp_key(ex.CENTRAL_X.private, ex.DEVICE_X.public, "campus", "pi-a101")
    assert device_side == central_side == ex.totp_key()
    for line in ex.totp_codes().split("\n"):
        fields = dict(part.split("=") for part in line.split())
        for digest in ("sha1", "sha256"):
            assert totp_at(device_side, int(fields["unix_s"]), 30, digest) == fields[digest]


def test_non_canonical_base64url_is_refused_by_both_sides() -> None:
    """§1.3: the same signature bytes under a text with an unused bit set. Python's base64
    module decodes it without complaint; roomproof's verifier refuses it, and so does
    joserfc 1.8. A bundle therefore has one byte form."""
    compact = ex.proof_jws()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = alphabet.index(compact[-1])
    assert index % 16 == 0  # 4 unused bits in 86 characters of a 64-byte signature
    twin = compact[:-1] + alphabet[index | 1]
    signature, twin_signature = (c.split(".")[2] for c in (compact, twin))
    lenient = base64.urlsafe_b64decode(twin_signature + "==")
    assert lenient == base64.urlsafe_b64decode(signature + "==")
    with pytest.raises(ValueError):
        unb64(twin_signature)
    with pytest.raises((JoseError, binascii.Error, ValueError)):
        jose_verify(twin, ex.DEVICE_ED.public, "roomproof-proof+jws", "pi-a101")
    with pytest.raises(proof.ProofError):
        proof.decode(twin)


# -- a real agent and a real central ---------------------------------------------------------


def enrollment_request(payload: str) -> dict[str, typing.Any]:
    """The request's members: bare JSON, or (proof of possession) the payload of a JWS
    signed by the Ed25519 key the request carries."""
    if payload.startswith("{"):
        request = json.loads(payload)
        assert isinstance(request, dict)
        return request
    claims = json.loads(unb64(payload.split(".")[1]))
    key = unb64(claims["ed25519"])
    return jose_verify(payload, key, "roomproof-enroll+jws", claims["device"])


def read_bus(path: pathlib.Path) -> list[tuple[str, str]]:
    """(topic, payload) lines written by mosquitto_sub."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(line.split(" ", 1)[0], line.split(" ", 1)[1]) for line in lines if " " in line]


def on(bus: list[tuple[str, str]], kind: str) -> list[str]:
    return [payload for topic, payload in bus if topic == f"roomproof/v1/campus/pi-a101/{kind}"]


def typ_of(compact: str) -> str:
    return str(json.loads(unb64(compact.split(".")[0]))["typ"])


@pytest.mark.slow
def test_a_live_agent_and_central_interoperate_with_other_libraries(
    tmp_path: pathlib.Path, own_broker: broker_mod.Broker
) -> None:
    central = system.Central(tmp_path / "central", own_broker.url)
    bundle_path = tmp_path / "bundle.toml"
    token = central.provision(bundle_path)
    bundle = tomllib.loads(bundle_path.read_text())
    central_ed, central_x = unb64(bundle["central_ed25519"]), unb64(bundle["central_x25519"])
    central.cli("student", "add", "--site", "campus", "--student-id", "s1", "--pin", "432109")
    bus_file = tmp_path / "bus.txt"
    command_line = ["mosquitto_sub", "-p", str(own_broker.port), "-V", "mqttv5", "-q", "1"]
    command_line += ["-t", "roomproof/v1/campus/pi-a101/#", "-F", "%t %p"]
    with bus_file.open("wb") as out:  # an MQTT client that is not ours either
        subscriber = subprocess.Popen(command_line, stdout=out)
    agent = system.Agent(
        tmp_path / "agent",
        bundle_path,
        f"slot_s = {SLOT_S}\nrequire_trusted_time = false\ntelemetry_interval_s = 2\n",
    )
    admin = system.Http(central.url, token)
    try:
        central.start()
        agent.start()

        # Enrollment: the device's keys reach central under an HMAC of the bundle's code.
        requests = system.wait_for(lambda: on(read_bus(bus_file), "enroll"), 60, "a request")
        request = enrollment_request(requests[0])
        mac_input = "\n".join(
            ["roomproof-enroll/v1"]
            + [str(request[k]) for k in ("site", "room", "device", "ed25519", "x25519")]
            + [str(request["nonce"]), str(request["ts"])]
        ).encode()
        code = unb64(bundle["enrollment_code"])
        assert unb64(request["mac"]) == hmac.new(code, mac_input, hashlib.sha256).digest()
        device_ed = unb64(request["ed25519"])
        reply = jose_verify(
            system.wait_for(lambda: on(read_bus(bus_file), "cmd"), 30, "the reply")[0],
            central_ed,
            "roomproof-cmd+jws",
            "central",
        )
        assert reply["type"] == "enrolled" and reply["nonce"] == request["nonce"]

        # Proofs: signatures, the hash chain and each slot's QR token.
        proofs = system.wait_for(
            lambda: (found := on(read_bus(bus_file), "proof")) and len(found) >= 3 and found,
            60,
            "three proofs",
        )
        previous = "0" * 64
        for compact in proofs:
            claims = jose_verify(compact, device_ed, "roomproof-proof+jws", "pi-a101")
            assert claims["prev"] == previous
            previous = hashlib.sha256(compact.encode()).hexdigest()
            message = qr_message(claims["site"], claims["device"], claims["room"], claims["slot"])
            assert ed25519_ok(device_ed, message, unb64(claims["qr"]))
            assert claims["slot"] == claims["iat"] // (claims["slot_s"] * 1000)

        # A command from central, and the device's signed result, status and telemetry.
        path = "/api/v1/devices/campus/pi-a101/commands"
        status, body, _ = admin.request(
            "POST", path, {"kind": "show_message", "args": {"text": "Interop", "seconds": 30}}
        )
        assert status == 201, body
        nonce = body["command"]["nonce"]

        def result() -> dict[str, typing.Any] | None:
            for compact in on(read_bus(bus_file), "telemetry"):
                if typ_of(compact) == "roomproof-command-result+jws":
                    claims = jose_verify(compact, device_ed, typ_of(compact), "pi-a101")
                    if claims["nonce"] == nonce:
                        return claims
            return None

        assert system.wait_for(result, 30, "the command's result")["outcome"] == "applied"
        commands = [c for c in on(read_bus(bus_file), "cmd") if typ_of(c).endswith("command+jws")]
        sent = jose_verify(commands[-1], central_ed, "roomproof-command+jws", "central")
        assert sent["nonce"] == nonce and sent["args"] == {"text": "Interop", "seconds": 30}
        assert isinstance(sent["iat"], int) and 0 < sent["exp"] - sent["iat"] <= 86_400_000
        telemetry = [
            jose_verify(c, device_ed, typ_of(c), "pi-a101")
            for c in on(read_bus(bus_file), "telemetry")
            if typ_of(c) == "roomproof-telemetry+jws"
        ]
        assert telemetry and set(telemetry[-1]["outbox_depth"]) >= {"proof", "telemetry"}
        online = [
            jose_verify(c, device_ed, "roomproof-status+jws", "pi-a101")
            for c in on(read_bus(bus_file), "status")
        ]
        assert any(s["state"] == "online" for s in online)
        assert all(len(s["boot"]) == 16 and s["boot"] == s["boot"].lower() for s in online)

        # A one-time code computed by pyotp from the device's raw key file and central's key.
        device_x_private = (agent.state / "keys" / "x25519.key").read_bytes()
        assert len(device_x_private) == 32
        assert x25519.X25519PrivateKey.from_private_bytes(
            device_x_private
        ).public_key().public_bytes_raw() == unb64(request["x25519"])
        key = totp_key(device_x_private, central_x, "campus", "pi-a101")
        step = json.loads(unb64(proofs[-1].split(".")[1]))["otp_step_s"]
        http = system.Http(central.url)
        status, body, _ = http.request(
            "POST",
            "/api/v1/checkins",
            {
                "site": "campus",
                "room": "a-101",
                "otp": totp_at(key, time.time(), step),
                "student_id": "s1",
                "pin": "432109",
            },
        )
        assert status == 201, body
        checkin = body["checkin"]

        # Its evidence bundle, downloaded and verified with nothing of ours.
        def download() -> bytes | None:
            request_ = urllib.request.Request(
                f"{central.url}/api/v1/checkins/{checkin['id']}/evidence",
                headers={"Authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(request_, timeout=10) as response:
                    return bytes(response.read())
            except urllib.error.HTTPError as error:
                assert error.code == 409, error.read()
                return None

        data = system.wait_for(download, 30, "the evidence bundle")
        checked = verify_bundle(data, None, central_ed)  # the key chain names the device key
        assert checked == verify_bundle(data, device_ed, central_ed)
        assert checked.record["student_id"] == "s1" and checked.record["method"] == "otp"
        assert checked.record["record"] == checkin["id"]
        assert isinstance(checked.record["checked_in_at"], int)
    finally:
        subscriber.send_signal(signal.SIGTERM)
        subscriber.wait(timeout=10)
        if agent.process is not None:
            agent.stop(signal.SIGKILL)
        central.stop()
