"""Signed enrollment requests and the key chain of evidence bundles, through a real central.

A device signs its enrollment request with the key it enrolls (proof of possession) and central
keeps the request as that key's evidence; a bundle carries the chain from the enrolled key to
the one that signed its proof, so it verifies with central's public key alone, before and after
a rotation, and a tampered chain entry is refused with the entry and the reason."""

from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess
import sys
import time
import typing
import warnings

import pytest
from joserfc import jws as jose_jws
from joserfc.jwk import OKPKey

from central.checkin import evidence
from central.checkin import keychain
from central.cli import verify_cmd
from central.core import clock as clock_mod
from central.storage import store
from edge_agent.protocol import b64
from edge_agent.protocol import enroll
from edge_agent.protocol import jws
from edge_agent.protocol import keychange
from edge_agent.protocol import keys
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from tests.central import conftest

ROOT = pathlib.Path(__file__).resolve().parents[2]
Central = conftest.Central
Device = conftest.ScriptedDevice


@pytest.fixture()
def clock() -> clock_mod.SettableClock:
    """Central's clock at the start of the current slot; the test moves it a slot on."""
    now = int(time.time() * 1000)
    return clock_mod.SettableClock(
        slots.slot_start_ms(slots.slot_of(now, conftest.SLOT_S), conftest.SLOT_S)
    )


async def history(central: Central, device: str) -> list[dict[str, typing.Any]]:
    status, body = await central.request(
        "GET", f"/api/v1/devices/{central.site}/{device}/keys", token=central.admin_token
    )
    assert status == 200, body
    return typing.cast(list[dict[str, typing.Any]], body["keys"])


async def counted(central: Central, reason: str) -> None:
    async def found() -> bool:
        return (await central.rejections()).get(reason, 0) >= 1

    await conftest.poll(found, 10, f"rejection {reason}")


async def test_the_signed_enrollment_request_is_the_keys_evidence(central: Central) -> None:
    device, code = await central.add_device("pi-a101")
    assert (await central.enroll(device, code))["type"] == "enrolled"
    (first,) = await history(central, device.device)
    assert (first["kind"], first["note"]) == ("enroll", "")
    # Anyone can check it with a JOSE library and the key it names: proof of possession.
    public = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": first["public_key"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns that EdDSA is deprecated (RFC 9864)
        found = jose_jws.deserialize_compact(first["evidence"], public, algorithms=["EdDSA"])
    assert found.headers()["typ"] == enroll.REQUEST_TYP
    request = json.loads(found.payload)
    assert request["ed25519"] == first["public_key"] == b64.encode(device.signing.public)
    assert (request["site"], request["device"]) == (central.site, device.device)

    # A request whose signature is not by the key it carries binds nothing.
    forger, forger_code = await central.add_device("pi-forged")
    body = enroll.make_request(
        forger_code,
        forger.site,
        forger.room,
        forger.device,
        forger.signing.public,
        forger.agreement.public,
    )
    forged = jws.sign(body, keys.SigningKey.generate(), forger.device, enroll.REQUEST_TYP)
    await central.publish(forger.topic("enroll"), forged)
    await counted(central, "enroll_bad_signature")
    record = await central.db.get_device(central.site, forger.device)
    assert record is not None and record.ed25519 is None and record.enroll_code == forger_code

    # An agent older than signed requests still enrolls; its evidence says why it is weaker.
    old, old_code = await central.add_device("pi-old")
    assert (await central.enroll(old, old_code, signed=False))["type"] == "enrolled"
    (legacy,) = await history(central, old.device)
    assert legacy["note"] == store.NOTE_UNSIGNED_REQUEST
    assert json.loads(legacy["evidence"])["ed25519"] == b64.encode(old.signing.public)


def rotate(device: Device, iat_ms: int) -> str:
    new, new_x = keys.SigningKey.generate(), keys.AgreementKey.generate()
    message = keychange.sign(
        device.signing,
        new,
        new_x.public,
        device.site,
        device.room,
        device.device,
        device.seq + 1,
        iat_ms,
    )
    device.signing, device.agreement = new, new_x
    return message


def verify_cli(path: pathlib.Path, *keys_: str) -> subprocess.CompletedProcess[str]:
    """`python -m central verify` in a process of its own, with nothing but its arguments."""
    return subprocess.run(
        [sys.executable, "-m", "central", "verify", str(path), *keys_],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def canonical(bundle: dict[str, typing.Any]) -> bytes:
    return json.dumps(bundle, sort_keys=True, separators=(",", ":")).encode()


async def test_bundles_before_and_after_a_rotation_verify_with_centrals_key_alone(
    central: Central, clock: clock_mod.SettableClock, tmp_path: pathlib.Path
) -> None:
    device, code = await central.add_device("pi-a101")
    assert (await central.enroll(device, code))["type"] == "enrolled"
    for student in ("s1", "s2"):
        await central.add_student(student, "2468")

    async def check_in(student: str) -> int:
        slot = slots.slot_of(clock.now_ms(), conftest.SLOT_S)
        url = qrtoken.url(central.url, device.site, device.device, slot, device.token(slot))
        body = {"token": url, "student_id": student, "pin": "2468"}
        status, answer = await central.request("POST", "/api/v1/checkins", body)
        assert status == 201, answer
        return int(answer["checkin"]["id"])

    async def stored(seqs: list[int]) -> bool:
        return await central.stored_seqs(device.device) == seqs

    await central.publish(device.topic("proof"), device.next_proof(clock.now_ms()))
    await conftest.poll(lambda: stored([1]), 10, "the first proof")
    before = await check_in("s1")
    old = device.signing
    await central.publish(device.topic("enroll"), rotate(device, clock.now_ms()))

    async def rotated() -> bool:
        found = await central.db.get_device(central.site, device.device)
        return found is not None and found.ed25519 == device.signing.public

    await conftest.poll(rotated, 10, "the new key at central")
    clock.advance(conftest.SLOT_S * 1000)
    await central.publish(device.topic("proof"), device.next_proof(clock.now_ms()))
    await conftest.poll(lambda: stored([1, 2]), 10, "the new key's proof")
    await asyncio.sleep(1.1)  # check-ins see a device's row at most 1 s old (its new key)
    after = await check_in("s2")

    _, published = await central.request("GET", "/api/v1/keys")
    central_key = published["ed25519"]
    files = {}
    for name, checkin_id in (("before", before), ("after", after)):
        status, bundle = await central.request(
            "GET", f"/api/v1/checkins/{checkin_id}/evidence", token=central.admin_token
        )
        assert status == 200, bundle
        files[name] = tmp_path / f"{name}.json"
        files[name].write_bytes(canonical(bundle))
        verified = evidence.verify_bundle(canonical(bundle), None, b64.decode(central_key))
        signer = old if name == "before" else device.signing
        assert verified.device_kid == keychain.thumbprint(signer.public)
        assert verified.record["device_kid"] == verified.device_kid
        assert [e["kind"] for e in bundle["key"]["chain"]] == (
            ["enroll"] if name == "before" else ["enroll", "rotate"]
        )
        done = verify_cli(files[name], "--central-key", central_key)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("VALID\n")
        assert "enrollment request signed by the enrolled key" in done.stdout
    assert (
        "key change signed by the previous key"
        in verify_cli(files["after"], "--central-key", central_key).stdout
    )

    # A tampered chain entry: a key change for the same new key, signed by another key.
    bundle = json.loads(files["after"].read_bytes())
    change = bundle["key"]["chain"][1]
    stranger = keys.SigningKey.generate()
    _, genuine = keychange.decode(change["evidence"].encode())
    tampered = dict(bundle)
    tampered["key"] = {
        "kid": bundle["key"]["kid"],
        "chain": [
            bundle["key"]["chain"][0],
            {
                **change,
                "evidence": jws.sign(
                    b64.decode(change["evidence"].split(".")[1]),
                    stranger,
                    device.device,
                    keychange.TYP,
                ),
            },
        ],
    }
    path = tmp_path / "tampered.json"
    path.write_bytes(canonical(tampered))
    done = verify_cli(path, "--central-key", central_key)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith(
        "INVALID: key_chain: device key chain: chain entry 2 (rotate from seq 2):"
        " the key change is not signed by the previous key"
    ), done.stdout
    assert genuine.ed25519 == device.signing.public

    # Another enrolled key at the root, and a key id that is not the last key's.
    forged_root = dict(bundle["key"]["chain"][0], ed25519=b64.encode(stranger.public))
    for key, reason in (
        ({**bundle["key"], "chain": [forged_root, change]}, "request enrolls another key"),
        ({**bundle["key"], "kid": keychain.thumbprint(old.public)}, "kid is not the thumbprint"),
    ):
        with pytest.raises(evidence.EvidenceError) as caught:
            evidence.verify_bundle(canonical({**bundle, "key": key}), None, b64.decode(central_key))
        assert caught.value.reason == "key_chain" and reason in str(caught.value)

    # Central countersigned the chain: not a byte of it changes, not even a note, and it
    # cannot be dropped. (Bundles made before chains verify with --device-key: test_evidence.)
    noted = {**bundle["key"], "chain": [dict(bundle["key"]["chain"][0], note="x"), change]}
    bare = {k: v for k, v in bundle.items() if k != "key"}
    for changed in ({**bundle, "key": noted}, bare):
        path = tmp_path / "changed.json"
        path.write_bytes(canonical(changed))
        argv = [str(path), "--central-key", central_key, "--device-key", b64.encode(old.public)]
        assert verify_cmd.main(argv) == 1
        with pytest.raises(evidence.EvidenceError, match="not the one central countersigned"):
            evidence.verify_bundle(
                path.read_bytes(), device.signing.public, b64.decode(central_key)
            )
    # With a chain, a given device key must be one of its keys.
    argv = [str(files["before"]), "--central-key", central_key]
    assert verify_cmd.main([*argv, "--device-key", b64.encode(old.public)]) == 0
    assert verify_cmd.main([*argv, "--device-key", b64.encode(stranger.public)]) == 1
