"""Evidence bundles with real keys: a valid one verifies, and no changed byte ever does.

The byte-flip test walks every position of a real bundle, because "changing any byte fails" is
the promise a bundle makes to whoever checks it offline.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import random
import subprocess
import sys
import typing

import pytest
import rfc8785

from central.checkin import evidence
from central.cli import verify_cmd
from edge_agent.protocol import b64
from edge_agent.protocol import chain
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from edge_agent.protocol import slots
from tests.central import conftest

ROOT = pathlib.Path(__file__).resolve().parents[2]
IAT_MS = 1_760_000_000_000


@dataclasses.dataclass
class Case:
    device: conftest.ScriptedDevice
    central: keys.SigningKey
    proof_jws: str
    slot: int
    token: bytes
    record: dict[str, typing.Any]
    bundle: bytes

    def sign(self, **overrides: typing.Any) -> str:
        """A record JWS; overrides replace the record, token, proof or signing key."""
        record = overrides.pop("record", self.record)
        token = overrides.pop("token", self.token)
        proof_jws = overrides.pop("proof_jws", self.proof_jws)
        key = overrides.pop("key", self.central)
        return evidence.sign_record(record, token, proof_jws, key)

    def check(self, data: bytes, **keys_: bytes) -> evidence.Verified:
        return evidence.verify_bundle(
            data,
            keys_.get("device", self.device.signing.public),
            keys_.get("central", self.central.public),
        )


def record_for(device: conftest.ScriptedDevice, slot: int) -> dict[str, typing.Any]:
    return {
        "record": 42,
        "site": device.site,
        "room": device.room,
        "device": device.device,
        "student_id": "s1234567",
        "slot": slot,
        "status": "present",
        "checked_in_at": IAT_MS + 3_000,
        "issued_at": IAT_MS + 3_050,
        "session": {"course": "cs-101", "id": 7},
        "flags": ["late"],
        "token_age_ms": 2_950,
    }


@pytest.fixture()
def case() -> Case:
    device = conftest.ScriptedDevice("site-a", "a-101", "pi-a101")
    device.next_proof(iat_ms=IAT_MS - 20_000)
    proof_jws = device.next_proof(iat_ms=IAT_MS)
    slot = slots.slot_of(IAT_MS, conftest.SLOT_S)
    token = device.token(slot)
    central = keys.SigningKey.generate()
    record = record_for(device, slot)
    record_jws = evidence.sign_record(record, token, proof_jws, central)
    bundle = evidence.make_bundle(record_jws, token, proof_jws)
    return Case(device, central, proof_jws, slot, token, record, bundle)


def rejects(case: Case, data: bytes, reason: str | None = None, **keys_: bytes) -> None:
    with pytest.raises(evidence.EvidenceError) as raised:
        case.check(data, **keys_)
    if reason is not None:
        assert raised.value.reason == reason, str(raised.value)


def test_a_bundle_verifies_and_returns_the_record_and_the_proof(case: Case) -> None:
    verified = case.check(case.bundle)
    assert verified.record == {
        **case.record,
        "token": b64.encode(case.token),
        "proof_hash": chain.link(case.proof_jws),
    }
    assert verified.proof.seq == 2
    assert verified.proof.slot == case.slot
    assert verified.proof.qr == b64.encode(case.token)
    assert f"QR token signed by the device for slot {case.slot}" in verified.checks
    assert f"proof seq 2 of slot {case.slot} signed by the device" in verified.checks
    assert "proof displayed this token" in verified.checks
    assert verified.checks[0].startswith("central countersignature valid")


def test_the_bundle_is_canonical_json(case: Case) -> None:
    parsed = json.loads(case.bundle)
    assert sorted(parsed) == ["proof", "record", "token", "type"]
    assert parsed["type"] == evidence.BUNDLE_TYPE
    assert case.bundle == json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    assert not case.bundle.endswith(b"\n")
    header = json.loads(b64.decode(parsed["record"].split(".")[0]))
    assert header == {"alg": "EdDSA", "kid": "central", "typ": evidence.RECORD_TYP}


def test_every_changed_byte_fails(case: Case) -> None:
    data = case.bundle
    assert 1000 < len(data) < 4000
    for position, byte in enumerate(data):
        replacement = ord("A") if byte != ord("A") else ord("B")
        for changed in (byte ^ 0x01, replacement):
            tampered = data[:position] + bytes([changed]) + data[position + 1 :]
            with pytest.raises(evidence.EvidenceError):
                case.check(tampered)


def test_keys_of_someone_else_fail(case: Case) -> None:
    other = keys.SigningKey.generate().public
    rejects(case, case.bundle, "proof_signature", device=other)
    rejects(case, case.bundle, "record_signature", central=other)
    rejects(case, case.bundle, "record_signature", central=case.device.signing.public)
    rejects(case, case.bundle, "bad_key", device=b"short")
    rejects(case, case.bundle, "bad_key", central=bytes(33))


def test_a_record_signed_by_another_key_fails(case: Case) -> None:
    for key in (keys.SigningKey.generate(), case.device.signing):
        bundle = evidence.make_bundle(case.sign(key=key), case.token, case.proof_jws)
        rejects(case, bundle, "record_signature")


def test_a_token_of_another_slot_fails(case: Case) -> None:
    other = case.device.token(case.slot + 1)
    # The bundle carries another (genuine) token than the record countersigned.
    rejects(case, evidence.make_bundle(case.sign(), other, case.proof_jws), "token_mismatch")
    # Central countersigned the other token, but the proof of the slot displayed this one.
    bundle = evidence.make_bundle(case.sign(token=other), other, case.proof_jws)
    rejects(case, bundle, "token_mismatch")


def test_a_proof_of_another_slot_fails(case: Case) -> None:
    later = case.device.next_proof(iat_ms=IAT_MS + conftest.SLOT_S * 1000)
    bundle = evidence.make_bundle(case.sign(proof_jws=later), case.token, later)
    rejects(case, bundle, "mismatch")
    # The record claims the later slot too: then the token is not the one that proof displayed.
    record = {**case.record, "slot": case.slot + 1}
    bundle = evidence.make_bundle(case.sign(record=record, proof_jws=later), case.token, later)
    rejects(case, bundle, "token_mismatch")


def test_another_proof_of_the_same_slot_fails(case: Case) -> None:
    again = case.device.next_proof(iat_ms=IAT_MS + 1_000)
    rejects(case, evidence.make_bundle(case.sign(), case.token, again), "proof_hash")


def test_a_token_not_signed_by_the_device_fails(case: Case) -> None:
    forged = case.device.token(case.slot, key=keys.SigningKey.generate())
    forged_proof = case.device.next_proof(iat_ms=IAT_MS + 1_000, qr=b64.encode(forged))
    record_jws = case.sign(token=forged, proof_jws=forged_proof)
    rejects(case, evidence.make_bundle(record_jws, forged, forged_proof), "token_signature")


def test_a_record_for_another_place_fails(case: Case) -> None:
    for field, value in (("room", "b-202"), ("device", "pi-b202"), ("site", "site-b")):
        bundle = evidence.make_bundle(
            case.sign(record={**case.record, field: value}), case.token, case.proof_jws
        )
        rejects(case, bundle, "mismatch")


def test_a_record_with_a_wrong_type_or_header_fails(case: Case) -> None:
    payload = json.loads(b64.decode(case.sign().split(".")[1]))
    for typ, kid in ((proof.TYP, "central"), (evidence.RECORD_TYP, "pi-a101")):
        record_jws = jws.sign(json.dumps(payload).encode(), case.central, kid, typ)
        bundle = evidence.make_bundle(record_jws, case.token, case.proof_jws)
        rejects(case, bundle, "bad_record")
    del payload["student_id"]
    record_jws = jws.sign(
        json.dumps(payload).encode(), case.central, "central", evidence.RECORD_TYP
    )
    rejects(case, evidence.make_bundle(record_jws, case.token, case.proof_jws), "bad_record")
    parsed = json.loads(case.bundle)
    parsed["type"] = "roomproof-evidence/v2"
    rejects(case, json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode(), "wrong_type")


def test_reformatted_bundles_fail(case: Case) -> None:
    parsed = json.loads(case.bundle)
    variants = [
        json.dumps(parsed, sort_keys=True, indent=2).encode(),
        json.dumps(parsed, sort_keys=True).encode(),
        json.dumps(dict(reversed(parsed.items())), separators=(",", ":")).encode(),
        case.bundle + b"\n\n",
        case.bundle + b"\r\n",
        b" " + case.bundle,
        b"\xef\xbb\xbf" + case.bundle,
        case.bundle.replace(b'"type"', b'"\\u0074ype"'),
        case.bundle.replace(b"evidence/v1", b"evidence\\/v1"),
        case.bundle[:-1] + b',"type":"roomproof-evidence/v1"}',
    ]
    for variant in variants:
        assert variant != case.bundle
        assert json.loads(variant.decode("utf-8-sig")) == parsed
        rejects(case, variant)


def test_one_trailing_newline_is_tolerated_and_more_is_refused_precisely(case: Case) -> None:
    assert case.check(case.bundle + b"\n").record == case.check(case.bundle).record
    for tail in (b"\n\n", b"\r\n", b" \n", b"\n ", b" ", b"\t"):
        with pytest.raises(evidence.EvidenceError) as raised:
            case.check(case.bundle + tail)
        assert raised.value.reason == "not_canonical"
        assert "only one trailing newline (a single LF byte, 0x0a) is tolerated" in str(
            raised.value
        ), tail
    with pytest.raises(evidence.EvidenceError) as raised:
        case.check(case.bundle.replace(b'","', b'", "', 1))
    assert str(raised.value).startswith("bundle bytes differ from their canonical form (RFC 8785")


def test_the_record_payload_is_rfc8785_for_non_ascii_text_and_numbers(case: Case) -> None:
    """An independent JCS implementation gives the same bytes: UTF-8 text unescaped, keys in
    UTF-16 order, numbers as ECMAScript writes them (the old `json.dumps` escaped non-ASCII
    text as \\u00e9 and wrote 1e-07)."""
    record = {
        **case.record,
        "flags": ["étudiant hors réseau €", "\u2028 line\x7f", "😀"],
        "note": {"ö": 1, "z": 2, "\ufb33": 3, "😀": 4, "\r": 5},
        "ratio": 1e-7,
        "big": 1e21,
        "whole": 100.0,
    }
    parsed = jws.parse(case.sign(record=record), evidence.MAX_BUNDLE_BYTES)
    expected = {**record, "token": b64.encode(case.token), "proof_hash": chain.link(case.proof_jws)}
    assert parsed.payload == rfc8785.dumps(expected)
    assert "étudiant".encode() in parsed.payload and b"1e-7" in parsed.payload
    with pytest.raises(ValueError):
        case.sign(record={**case.record, "seq": 2**53})
    with pytest.raises(ValueError):
        case.sign(record={**case.record, "ratio": float("nan")})


def test_oversize_input_fails(case: Case) -> None:
    big = {**case.record, "note": "x" * evidence.MAX_BUNDLE_BYTES}
    bundle = evidence.make_bundle(case.sign(record=big), case.token, case.proof_jws)
    rejects(case, bundle, "oversize")
    rejects(case, case.bundle + b" " * evidence.MAX_BUNDLE_BYTES, "oversize")


def test_truncated_inputs_fail(case: Case) -> None:
    for end in range(len(case.bundle)):
        rejects(case, case.bundle[:end])
        rejects(case, case.bundle[end + 1 :])


def test_random_garbage_fails(case: Case) -> None:
    rng = random.Random(20240611)
    parts = [b"{", b"}", b"[", b'"', b":", b",", b"\\u", b"type", b"proof", b"record", b"token"]
    parts += [b"null", b"1e999", b"\xff", b"\x00", b" ", b".", b"eyJ", case.bundle[:40]]
    for _ in range(300):
        rejects(case, rng.randbytes(rng.randrange(0, 3000)))
    for _ in range(300):
        rejects(case, b"".join(rng.choice(parts) for _ in range(rng.randrange(1, 60))))
    for _ in range(300):
        data = bytearray(case.bundle)
        for position in rng.sample(range(len(data)), rng.randrange(1, 8)):
            data[position] ^= rng.randrange(1, 256)
        rejects(case, bytes(data))
    deep = b'{"type":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    rejects(case, deep)
    nested = jws.sign(b"[" * 30_000, case.central, "central", evidence.RECORD_TYP)
    rejects(case, evidence.make_bundle(nested, case.token, case.proof_jws))
    strange = {"type": evidence.BUNDLE_TYPE, "record": "\ud800", "token": "é", "proof": "."}
    rejects(case, json.dumps(strange, sort_keys=True, separators=(",", ":")).encode())
    for value in ("", "a.b.c", "...", "\x00"):
        fake = {"type": evidence.BUNDLE_TYPE, "record": value, "token": value, "proof": value}
        rejects(case, json.dumps(fake, sort_keys=True, separators=(",", ":")).encode())


def test_sign_record_refuses_an_incomplete_record(case: Case) -> None:
    for field in ("record", "slot", "student_id", "checked_in_at"):
        incomplete = {key: value for key, value in case.record.items() if key != field}
        with pytest.raises(ValueError, match=field):
            case.sign(record=incomplete)
    with pytest.raises(ValueError, match="bytes"):
        case.sign(token=case.token[:10])


def write_case(tmp_path: pathlib.Path, case: Case) -> tuple[pathlib.Path, str, str]:
    path = tmp_path / "bundle.json"
    path.write_bytes(case.bundle)
    return path, b64.encode(case.device.signing.public), b64.encode(case.central.public)


def test_cli_says_valid(
    tmp_path: pathlib.Path, case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    path, device_key, central_key = write_case(tmp_path, case)
    argv = [str(path), "--device-key", device_key, "--central-key", central_key]
    assert verify_cmd.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("VALID\n")
    assert "ok  central countersignature valid" in out
    assert "site site-a / room a-101 / device pi-a101" in out
    assert "s1234567" in out
    assert "present" in out
    assert "2025-10-09T08:53:23.000Z" in out


def test_cli_says_invalid_for_a_changed_file(
    tmp_path: pathlib.Path, case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    path, device_key, central_key = write_case(tmp_path, case)
    # Rewrite the countersigned status and keep central's signature, as a forger would.
    parsed = json.loads(case.bundle)
    header, payload, signature = parsed["record"].split(".")
    record = json.loads(b64.decode(payload))
    record["status"] = "absent"
    payload = b64.encode(json.dumps(record, sort_keys=True, separators=(",", ":")).encode())
    parsed["record"] = f"{header}.{payload}.{signature}"
    path.write_bytes(json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode())
    argv = [str(path), "--device-key", device_key, "--central-key", central_key]
    assert verify_cmd.main(argv) == 1
    out = capsys.readouterr().out
    assert out == "INVALID: record_signature: central countersignature does not verify\n"


def test_cli_takes_a_file_with_one_trailing_newline_only(
    tmp_path: pathlib.Path, case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    path, device_key, central_key = write_case(tmp_path, case)
    argv = [str(path), "--device-key", device_key, "--central-key", central_key]
    path.write_bytes(case.bundle + b"\n")
    assert verify_cmd.main(argv) == 0
    assert capsys.readouterr().out.startswith("VALID\n")
    path.write_bytes(case.bundle + b"\n\n")
    assert verify_cmd.main(argv) == 1
    out = capsys.readouterr().out
    assert out.startswith("INVALID: not_canonical: bundle ends with b'\\n\\n' after its JSON")


def test_cli_json_and_key_files(
    tmp_path: pathlib.Path, case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    path, device_key, central_key = write_case(tmp_path, case)
    (tmp_path / "device.key").write_text(device_key + "\n")
    (tmp_path / "central.key").write_text(f"  {central_key}\n")
    argv = [str(path), "--device-key", f"@{tmp_path / 'device.key'}"]
    argv += ["--central-key", f"@{tmp_path / 'central.key'}", "--json"]
    assert verify_cmd.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["valid"] is True
    assert result["record"]["record"] == 42
    assert result["record"]["session"] == {"course": "cs-101", "id": 7}
    assert len(result["checks"]) >= 4
    argv[-2] = f"@{tmp_path / 'device.key'}"
    assert verify_cmd.main(argv) == 1
    result = json.loads(capsys.readouterr().out)
    assert result == {"valid": False, "reason": "record_signature", "message": result["message"]}


def test_cli_rejects_bad_keys_and_missing_files(
    tmp_path: pathlib.Path, case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    path, device_key, central_key = write_case(tmp_path, case)
    bad_keys = ["not a key!", b64.encode(bytes(31)), f"@{tmp_path / 'absent.key'}", "-x", ""]
    for bad in bad_keys:
        assert verify_cmd.main([str(path), "--device-key", bad, "--central-key", central_key]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith("error: --device-key: ")
        assert len(captured.err.strip().splitlines()) == 1
        assert captured.out == ""
    missing = str(tmp_path / "absent.json")
    assert verify_cmd.main([missing, "--device-key", device_key, "--central-key", central_key]) == 2
    assert "cannot read bundle" in capsys.readouterr().err
    assert verify_cmd.main([str(path), "--device-key", device_key]) == 2
    assert "--central-key" in capsys.readouterr().err


def test_cli_runs_alone_in_a_subprocess(tmp_path: pathlib.Path, case: Case) -> None:
    _, device_key, central_key = write_case(tmp_path, case)
    code = "import sys; from central.cli import verify_cmd; sys.exit(verify_cmd.main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "-", "--device-key", device_key, "--central-key", central_key],
        input=case.bundle,
        capture_output=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith("VALID\n")
    assert f"record      {case.record['record']}" in done.stdout.decode()


def test_cli_takes_keys_that_start_with_a_dash(
    tmp_path: pathlib.Path, case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    """One key in 64 starts with '-' in base64url; argparse alone would take it for an option."""
    central = keys.SigningKey.generate()
    while not b64.encode(central.public).startswith("-"):
        central = keys.SigningKey.generate()
    case = dataclasses.replace(case, central=central)
    case.bundle = evidence.make_bundle(case.sign(), case.token, case.proof_jws)
    path, device_key, central_key = write_case(tmp_path, case)
    argv = ["--central-key", central_key, "--device-key", device_key, str(path)]
    assert verify_cmd.main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("VALID\n")
