"""The worked examples of docs/protocol.md, computed by the project's own code.

Fixed keys (seeds 00..1f, 20..3f, ...), fixed names and fixed times make every signed object
deterministic (Ed25519 signatures are), so the document can show exact bytes and a test can
check them: `python -m tests.protocol.examples` prints every example in the document's form,
and `python -m tests.protocol.examples --write` recomputes the document's blocks in place.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pathlib
import re
import sys
import typing

from central.checkin import evidence
from central.checkin import keychain
from central.checkin import records
from central.storage import store
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
from edge_agent.protocol import slots
from edge_agent.protocol import totp

SITE, ROOM, DEVICE = "campus", "a-101", "pi-a101"
PUBLIC_URL = "https://attend.example.edu"
DEVICE_ED = keys.SigningKey(bytes(range(0x00, 0x20)))
DEVICE_X = keys.AgreementKey(bytes(range(0x20, 0x40)))
CENTRAL_ED = keys.SigningKey(bytes(range(0x40, 0x60)))
CENTRAL_X = keys.AgreementKey(bytes(range(0x60, 0x80)))
NEW_ED = keys.SigningKey(bytes(range(0x80, 0xA0)))
NEW_X = keys.AgreementKey(bytes(range(0xA0, 0xC0)))
ENROLLMENT_CODE = b64.encode(bytes(range(0xC0, 0xE0)))
IAT_MS = 1_764_662_400_123  # 2025-12-02T08:00:00.123Z
SLOT_S = 20
OTP_STEP_S = 30
SLOT = slots.slot_of(IAT_MS, SLOT_S)
BOOT = "8f3a5c0e91d24b67"
WRAP = 76


def qr_signature() -> bytes:
    return qrtoken.sign(DEVICE_ED, SITE, DEVICE, ROOM, SLOT)


def proof_claims() -> proof.Claims:
    return proof.Claims.model_validate(
        {
            "site": SITE,
            "room": ROOM,
            "device": DEVICE,
            "seq": 1,
            "boot": BOOT,
            "iat": IAT_MS,
            "clock": {"source": "ntp", "uncertainty_ms": 12},
            "slot": SLOT,
            "slot_s": SLOT_S,
            "otp_step_s": OTP_STEP_S,
            "qr": b64.encode(qr_signature()),
            "prev": chain.GENESIS,
            "env": {
                "gps": {
                    "lat": 48.137154,
                    "lon": 11.576124,
                    "accuracy_m": 4.5,
                    "fix": "3d",
                    "satellites": 9,
                    "time": IAT_MS - 123,
                },
                "wifi": [
                    {
                        "bssid": "a4:2b:b0:11:22:33",
                        "ssid": "Café-Gäste",
                        "rssi": -48,
                        "channel": 36,
                        "seen": 7,
                    }
                ],
                "ble": [
                    {
                        "kind": "ibeacon",
                        "id": "f7826da6-4fa2-4e98-8024-bc5b71e0893e/101/1",
                        "rssi": -61,
                        "tx_power": -59,
                        "seen": 18,
                    }
                ],
                "window_s": SLOT_S,
            },
        }
    )


def proof_jws() -> str:
    return proof.sign(proof_claims(), DEVICE_ED)


def totp_key() -> bytes:
    return totp.derive_key(DEVICE_X, CENTRAL_X.public, SITE, DEVICE)


def totp_codes() -> str:
    lines = []
    for unix_s in (IAT_MS // 1000, IAT_MS // 1000 + OTP_STEP_S):
        counter = totp.counter_at(unix_s, OTP_STEP_S)
        sha1 = totp.totp(totp_key(), unix_s, OTP_STEP_S, digest="sha1")
        sha256 = totp.totp(totp_key(), unix_s, OTP_STEP_S, digest="sha256")
        lines.append(f"unix_s={unix_s} counter={counter} sha1={sha1} sha256={sha256}")
    return "\n".join(lines)


def status_claims() -> report.Status:
    return report.Status(site=SITE, device=DEVICE, boot=BOOT, iat=IAT_MS - 60_000, state="online")


def telemetry_claims() -> report.Telemetry:
    return report.Telemetry.model_validate(
        {
            "site": SITE,
            "device": DEVICE,
            "boot": BOOT,
            "iat": IAT_MS + 5_000,
            "uptime_s": 65,
            "outbox_depth": {"proof": 0, "telemetry": 1},
            "dropped": {"dropped_telemetry": 3},
            "clock": {"source": "ntp", "uncertainty_ms": 12, "steps_back": 0, "last_step_ms": 0},
            "sensors": {"wifi": {"source": "monitor:wlan1", "mode": "monitor", "status": "ok"}},
        }
    )


COMMAND_NONCE = "c0ffee00c0ffee00"


def command_jws() -> str:
    return command.sign(
        CENTRAL_ED,
        SITE,
        DEVICE,
        "show_message",
        {"text": "Exam moved to B-2", "seconds": 600},
        COMMAND_NONCE,
        IAT_MS + 10_000,
        IAT_MS + 10_000 + 3_600_000,
    )


def command_result_claims() -> report.CommandResult:
    return report.CommandResult(
        site=SITE,
        device=DEVICE,
        boot=BOOT,
        iat=IAT_MS + 10_250,
        nonce=COMMAND_NONCE,
        kind="show_message",
        outcome="applied",
        reason="",
    )


ENROLL_NONCE = b64.encode(bytes(range(0xE0, 0xF0)))
ENROLL_TS = IAT_MS - 3_600_000


def enroll_fields() -> dict[str, typing.Any]:
    return {
        "site": SITE,
        "room": ROOM,
        "device": DEVICE,
        "ed25519": b64.encode(DEVICE_ED.public),
        "x25519": b64.encode(DEVICE_X.public),
        "nonce": ENROLL_NONCE,
        "ts": ENROLL_TS,
    }


def enroll_request() -> bytes:
    """The request's JSON (the signed request's payload), as `enroll.make_request` builds it
    with this example's nonce and time; the MAC is recomputed here from the spec's formula and
    the test has the code's `parse_request` and `check_mac` accept it."""
    fields = enroll_fields()
    mac = hmac.new(b64.decode(ENROLLMENT_CODE), enroll.mac_input(**fields), hashlib.sha256).digest()
    body = {"v": 1, **fields, "mac": b64.encode(mac)}
    return json.dumps(body, separators=(",", ":")).encode()


def enroll_request_jws() -> str:
    """The request as a v1 agent publishes it: signed by the Ed25519 key it enrolls."""
    return enroll.sign_request(
        ENROLLMENT_CODE,
        SITE,
        ROOM,
        DEVICE,
        DEVICE_ED,
        DEVICE_X.public,
        ts=ENROLL_TS,
        nonce=b64.decode(ENROLL_NONCE),
    ).decode("ascii")


def enroll_reply() -> str:
    return enroll.sign_reply(
        CENTRAL_ED,
        {
            "v": 1,
            "type": "enrolled",
            "site": SITE,
            "device": DEVICE,
            "room": ROOM,
            "nonce": ENROLL_NONCE,
            "iat": ENROLL_TS + 180,
            "config": {},
        },
    )


KEYCHANGE_FROM_SEQ = 2
KEYCHANGE_IAT = IAT_MS + 15_000


def keychange_jws() -> str:
    return keychange.sign(
        DEVICE_ED,
        NEW_ED,
        NEW_X.public,
        SITE,
        ROOM,
        DEVICE,
        KEYCHANGE_FROM_SEQ,
        KEYCHANGE_IAT,
    )


def checkin() -> store.Checkin:
    return store.Checkin(
        id=12,
        site=SITE,
        room=ROOM,
        device=DEVICE,
        student_id="s1234567",
        slot=SLOT,
        method="qr",
        created_at=IAT_MS + 4_321,
        token_age_ms=4_198,
        status="present",
        flags=(),
        session_id=7,
        session_date="2025-12-02",
    )


def proof_row() -> store.ProofRow:
    compact = proof_jws()
    return store.ProofRow(
        site=SITE,
        device=DEVICE,
        seq=1,
        slot=SLOT,
        iat=IAT_MS,
        received_at=IAT_MS + 35,
        jws=compact,
        hash=chain.link(compact),
        gap_before=False,
        verdict="verified",
    )


ISSUED_AT = IAT_MS + 86_400_000


def record_jws() -> str:
    history = key_history()
    key_chain = keychain.member(history, history[0])
    claims = records.record_claims(checkin(), proof_row(), ISSUED_AT, key_chain)
    return evidence.sign_record(claims, qr_signature(), proof_jws(), CENTRAL_ED)


def key_history() -> list[store.DeviceKey]:
    """The device's key history at central: enrolled with the signed request, then rotated."""
    enrolled = store.DeviceKey(
        id=1,
        site=SITE,
        device=DEVICE,
        room=ROOM,
        from_seq=1,
        ed25519=DEVICE_ED.public,
        x25519=DEVICE_X.public,
        kind="enroll",
        added_at=ENROLL_TS + 180,
        evidence=enroll_request_jws(),
    )
    rotated = store.DeviceKey(
        id=2,
        site=SITE,
        device=DEVICE,
        room=ROOM,
        from_seq=KEYCHANGE_FROM_SEQ,
        ed25519=NEW_ED.public,
        x25519=NEW_X.public,
        kind="rotate",
        added_at=KEYCHANGE_IAT + 40,
        evidence=keychange_jws(),
    )
    return [enrolled, rotated]


def bundle() -> bytes:
    """The bundle of a check-in whose proof (seq 1) the enrolled key signed: its key chain is
    the enrollment alone."""
    history = key_history()
    chain_member = keychain.member(history, history[0])
    return evidence.make_bundle(record_jws(), qr_signature(), proof_jws(), chain_member)


def rotated_key_chain() -> str:
    """The `key` member of a bundle whose proof the rotated key signed (seq 2 on)."""
    history = key_history()
    return evidence.canonical_json(keychain.member(history, history[1])).decode()


def status_jws() -> str:
    return report.sign(status_claims(), DEVICE_ED).decode()


def telemetry_jws() -> str:
    return report.sign(telemetry_claims(), DEVICE_ED).decode()


def command_result_jws() -> str:
    return report.sign(command_result_claims(), DEVICE_ED).decode()


def _part(compact: str | bytes, index: int) -> bytes:
    text = compact.decode() if isinstance(compact, bytes) else compact
    return b64.decode(text.split(".")[index])


def _hex(data: bytes) -> str:
    return data.hex()


def build() -> dict[str, tuple[str, str]]:
    """name -> (format, value): `text` is shown as is (UTF-8), `wrapped` in lines of 76."""
    qr_message = qrtoken.message(SITE, DEVICE, ROOM, SLOT)
    status = status_jws()
    telemetry = telemetry_jws()
    result = command_result_jws()
    change = keychange.decode(keychange_jws().encode())[1]
    x25519_shared = DEVICE_X.shared(CENTRAL_X.public)
    parsed_proof = jws.parse(proof_jws(), proof.MAX_BYTES)
    values: dict[str, tuple[str, str]] = {
        "device-ed25519-seed": ("wrapped", _hex(DEVICE_ED.seed)),
        "device-ed25519-public": ("wrapped", b64.encode(DEVICE_ED.public)),
        "device-x25519-private": ("wrapped", _hex(DEVICE_X.private)),
        "device-x25519-public": ("wrapped", b64.encode(DEVICE_X.public)),
        "central-ed25519-seed": ("wrapped", _hex(CENTRAL_ED.seed)),
        "central-ed25519-public": ("wrapped", b64.encode(CENTRAL_ED.public)),
        "central-x25519-private": ("wrapped", _hex(CENTRAL_X.private)),
        "central-x25519-public": ("wrapped", b64.encode(CENTRAL_X.public)),
        "new-ed25519-public": ("wrapped", b64.encode(NEW_ED.public)),
        "new-x25519-public": ("wrapped", b64.encode(NEW_X.public)),
        "qr-message": ("text", qr_message.decode()),
        "qr-message-hex": ("wrapped", _hex(qr_message)),
        "qr-signature": ("wrapped", b64.encode(qr_signature())),
        "qr-url": ("wrapped", qrtoken.url(PUBLIC_URL, SITE, DEVICE, SLOT, qr_signature())),
        "totp-x25519-shared": ("wrapped", _hex(x25519_shared)),
        "totp-key": ("wrapped", _hex(totp_key())),
        "totp-key-base32": ("wrapped", base64.b32encode(totp_key()).decode()),
        "totp-codes": ("text", totp_codes()),
        "proof-header": ("text", _part(proof_jws(), 0).decode()),
        "proof-payload": ("text", _part(proof_jws(), 1).decode()),
        "proof-signing-input-sha256": (
            "wrapped",
            _hex(hashlib.sha256(parsed_proof.signing_input).digest()),
        ),
        "proof-jws": ("wrapped", proof_jws()),
        "proof-link": ("wrapped", chain.link(proof_jws())),
        "status-payload": ("text", _part(status, 1).decode()),
        "status-jws": ("wrapped", status),
        "telemetry-payload": ("text", _part(telemetry, 1).decode()),
        "telemetry-jws": ("wrapped", telemetry),
        "command-header": ("text", _part(command_jws(), 0).decode()),
        "command-payload": ("text", _part(command_jws(), 1).decode()),
        "command-jws": ("wrapped", command_jws()),
        "command-result-payload": ("text", _part(result, 1).decode()),
        "command-result-jws": ("wrapped", result),
        "enroll-code": ("wrapped", ENROLLMENT_CODE),
        "enroll-mac-input": ("text", enroll.mac_input(**enroll_fields()).decode()),
        "enroll-request": ("text", enroll_request().decode()),
        "enroll-request-header": ("text", _part(enroll_request_jws(), 0).decode()),
        "enroll-request-jws": ("wrapped", enroll_request_jws()),
        "enroll-reply-payload": ("text", _part(enroll_reply(), 1).decode()),
        "enroll-reply-jws": ("wrapped", enroll_reply()),
        "keychange-pop-input": ("text", keychange.pop_input(change).decode()),
        "keychange-payload": ("text", _part(keychange_jws(), 1).decode()),
        "keychange-jws": ("wrapped", keychange_jws()),
        "record-payload": ("text", _part(record_jws(), 1).decode()),
        "record-jws": ("wrapped", record_jws()),
        "device-kid": ("wrapped", keychain.thumbprint(DEVICE_ED.public)),
        "new-kid": ("wrapped", keychain.thumbprint(NEW_ED.public)),
        "bundle": ("wrapped", bundle().decode()),
        "key-chain-rotated": ("wrapped", rotated_key_chain()),
        "bundle-sha256": ("wrapped", _hex(hashlib.sha256(bundle()).digest())),
    }
    return values


def render(form: str, value: str) -> str:
    """The fenced block's body as the document shows it."""
    if form == "text":
        return value
    return "\n".join(value[i : i + WRAP] for i in range(0, len(value), WRAP))


DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
BLOCK = re.compile(r"^<!-- example: ([a-z0-9-]+) (text|wrapped) -->\n```\n.*?\n```$", re.M | re.S)


def block(name: str, form: str, value: str) -> str:
    return f"<!-- example: {name} {form} -->\n```\n{render(form, value)}\n```"


def rewrite(text: str, values: dict[str, tuple[str, str]]) -> tuple[str, set[str]]:
    """The document with each marked block recomputed, and the names it lacks."""
    seen: set[str] = set()

    def fresh(match: re.Match[str]) -> str:
        name = match[1]
        if name not in values:
            raise SystemExit(f"docs/protocol.md shows example {name}, which nothing computes")
        seen.add(name)
        return block(name, *values[name])

    return BLOCK.sub(fresh, text), set(values) - seen


def main(argv: list[str]) -> int:
    """Print every example, or with --write recompute the blocks of docs/protocol.md in
    place (after a deliberate format change; new examples must be placed by hand)."""
    values = build()
    if argv[1:] == ["--write"]:
        text, missing = rewrite(DOC.read_text(encoding="utf-8"), values)
        DOC.write_text(text, encoding="utf-8")
        for name in sorted(missing):
            sys.stdout.write(f"not in the document yet:\n{block(name, *values[name])}\n")
        return 1 if missing else 0
    for name, (form, value) in values.items():
        sys.stdout.write(block(name, form, value) + "\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
