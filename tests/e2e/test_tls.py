"""The same room over mqtts:// with per-account passwords (central and agent verify the
broker), and central's own HTTP API over HTTPS."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import urllib.error

import pytest

from tests import broker as broker_mod
from tests import system
from tests import tls


@pytest.mark.slow
def test_room_over_tls_with_passwords(tmp_path: pathlib.Path) -> None:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.fail("mosquitto_passwd is missing: run .ci/setup (Debian package mosquitto)")
    certs = tls.make(tmp_path / "certs")
    password_file = tmp_path / "passwd"
    password_file.touch(mode=0o600)
    for user, secret in (("central", "central-secret"), ("pi-a101", "device-secret")):
        subprocess.run([passwd, "-b", str(password_file), user, secret], check=True)
    broker = broker_mod.Broker(
        tmp_path / "mosquitto",
        listener_options=(
            f"cafile {certs.ca}\ncertfile {certs.cert}\nkeyfile {certs.key}\n"
            f"allow_anonymous false\npassword_file {password_file}\n"
        ),
    )
    with broker:
        url = f"mqtts://127.0.0.1:{broker.port}"
        central = system.Central(tmp_path / "central", url)
        with central.config.open("a") as config:
            config.write(
                f'mqtt_username = "central"\nmqtt_password = "central-secret"\n'
                f'mqtt_ca = "{certs.ca}"\ndevice_mqtt_username = "pi-a101"\n'
                'device_mqtt_password = "device-secret"\n'
            )
        central.serve_https(certs.cert, certs.key, certs.ca)
        bundle = tmp_path / "bundle.toml"
        token = central.provision(bundle)
        assert "BEGIN CERTIFICATE" in bundle.read_text()
        agent = system.Agent(
            tmp_path / "agent", bundle, "slot_s = 5\nrequire_trusted_time = false\n"
        )
        central.start()
        agent.start()
        try:
            admin = system.Http(central.url, token, central.context)
            assert central.url.startswith("https://")
            with pytest.raises(urllib.error.URLError):  # only the pinned CA is trusted
                system.Http(central.url).request("GET", "/healthz")

            def delivered() -> bool:
                _, body, _ = admin.request("GET", "/api/v1/devices")
                return bool(body["devices"] and body["devices"][0]["last_seq"] >= 2)

            system.wait_for(delivered, 60, "proofs over TLS")
            _, health, _ = admin.request("GET", "/healthz")
            assert health["mqtt"] == "connected"
        finally:
            agent.stop()
            central.stop()
