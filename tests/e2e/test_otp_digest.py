"""A device set to `otp_digest = "sha256"`, with the real agent and central processes: central
learns the digest from the signed proofs and accepts the 6-digit code the screen shows; the
device's enrollment request, signed by its key, is its key's evidence; and the check-in's
evidence bundle verifies with central's public key alone (`central verify`)."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time
import typing
import urllib.request

import pytest

from edge_agent.protocol import b64
from edge_agent.protocol import enroll
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from edge_agent.protocol import totp
from tests import broker as broker_mod
from tests import system

SITE, ROOM, DEVICE = "campus", "a-101", "pi-a101"


@pytest.mark.slow
def test_a_sha256_device_checks_in_with_its_code(
    tmp_path: pathlib.Path, own_broker: broker_mod.Broker
) -> None:
    central = system.Central(tmp_path / "central", own_broker.url)
    bundle = tmp_path / "bundle.toml"
    token = central.provision(bundle)
    central.cli("student", "add", "--site", SITE, "--student-id", "s1", "--pin", "432109")
    screen = broker_mod.free_port()
    agent = system.Agent(
        tmp_path / "agent",
        bundle,
        'slot_s = 5\nrequire_trusted_time = false\notp_digest = "sha256"\n'
        f'display_sinks = ["web"]\nweb_port = {screen}\n',
    )
    admin = system.Http(central.url, token)
    central.start()
    agent.start()
    try:

        def frame() -> dict[str, typing.Any]:
            with urllib.request.urlopen(f"http://127.0.0.1:{screen}/frame.json") as response:
                return typing.cast(dict[str, typing.Any], json.load(response))

        def proofs() -> list[dict[str, typing.Any]]:
            status, body, _ = admin.request("GET", f"/api/v1/proofs?site={SITE}&device={DEVICE}")
            assert status == 200, body
            return typing.cast(list[dict[str, typing.Any]], body["proofs"])

        rows = system.wait_for(proofs, 60, "a proof at central")
        shown = system.wait_for(lambda: frame().get("code"), 30, "a code on the screen")
        status, body, _ = system.Http(central.url).request(
            "POST",
            "/api/v1/checkins",
            {"site": SITE, "room": ROOM, "otp": shown, "student_id": "s1", "pin": "432109"},
        )
        assert status == 201 and body["checkin"]["method"] == "otp", body
        checkin = body["checkin"]["id"]

        # Central knows the digest from the signed proofs; the code is HMAC-SHA256.
        assert proof.decode(rows[0]["jws"])[1].otp_digest == "sha256"
        status, body, _ = admin.request("GET", "/api/v1/devices")
        assert [d["otp_digest"] for d in body["devices"]] == ["sha256"], body
        signing = keys.SigningKey((agent.state / "keys" / "ed25519.key").read_bytes())
        agreement = keys.AgreementKey((agent.state / "keys" / "x25519.key").read_bytes())
        _, published, _ = admin.request("GET", "/api/v1/keys")
        key = totp.derive_key(agreement, b64.decode(published["x25519"]), SITE, DEVICE)
        assert totp.matches(key, shown, time.time(), 30, 2, "sha256") is not None

        # The enrollment request the agent signed is its key's evidence.
        status, body, _ = admin.request("GET", f"/api/v1/devices/{SITE}/{DEVICE}/keys")
        assert status == 200, body
        (first,) = body["keys"]
        request = enroll.parse_request(first["evidence"].encode())
        assert request.signed and request.ed25519 == signing.public and first["note"] == ""
        parsed = jws.parse(first["evidence"], enroll.MAX_BYTES)
        assert parsed.header["typ"] == enroll.REQUEST_TYP and jws.verify(parsed, signing.public)

        # The check-in's bundle verifies with central's key alone.
        def bundle_file() -> pathlib.Path | None:
            status, body, _ = admin.request("GET", f"/api/v1/checkins/{checkin}/evidence")
            if status == 409:
                return None
            assert status == 200, body
            path = tmp_path / "bundle.json"
            path.write_text(json.dumps(body, sort_keys=True, separators=(",", ":")))
            return path

        path = system.wait_for(bundle_file, 30, "the evidence bundle")
        central_key = published["ed25519"]
        done = subprocess.run(
            [sys.executable, "-m", "central", "verify", str(path), "--central-key", central_key],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "enrollment request signed by the enrolled key" in done.stdout
    finally:
        if agent.process is not None:
            agent.stop(signal.SIGKILL)
        central.stop()
