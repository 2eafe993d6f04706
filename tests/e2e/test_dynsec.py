"""Per-device broker accounts on a real Mosquitto with the dynamic security plugin: central
creates them when a device is added, a device can publish only as itself and read only its
own commands, and a revoked device is cut off."""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import signal
import subprocess
import tomllib

import aiomqtt
import pytest

from central.core import settings as central_settings
from central.ingest import bridge
from edge_agent import mqttlink
from tests import broker as broker_mod
from tests import system

PLUGIN = pathlib.Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


def dynsec_broker(tmp_path: pathlib.Path) -> broker_mod.Broker:
    if not PLUGIN.exists() or shutil.which("mosquitto_ctrl") is None:
        pytest.skip("Mosquitto's dynamic security plugin is not installed")
    config = tmp_path / "dynsec.json"
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(config), "admin", "admin-secret"],
        check=True,
        capture_output=True,
    )
    return broker_mod.Broker(
        tmp_path / "mosquitto",
        listener_options=(
            f"allow_anonymous false\nplugin {PLUGIN}\nplugin_opt_config_file {config}\n"
        ),
    )


async def try_as(
    broker: broker_mod.Broker, fields: dict, own: str, other: str
) -> tuple[int, int, int, int]:
    """PUBACK reason on its own topic and on another device's, SUBACK on its own cmd and on
    the other's cmd, for the device whose bundle `fields` are given."""
    async with mqttlink.Client(
        "127.0.0.1",
        broker.port,
        username=fields["mqtt_username"],
        password=fields["mqtt_password"],
        identifier=fields["mqtt_username"],
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        mine = await client.publish_acked(f"roomproof/v1/campus/{own}/telemetry", b"{}")
        theirs = await client.publish_acked(f"roomproof/v1/campus/{other}/proof", b"forged")
        own_cmd = await client.subscribe(f"roomproof/v1/campus/{own}/cmd", qos=1)
        other_cmd = await client.subscribe(f"roomproof/v1/campus/{other}/cmd", qos=1)
    return mine, theirs, own_cmd[0].value, other_cmd[0].value  # type: ignore[index,union-attr]


@pytest.mark.slow
def test_device_accounts_acls_and_revocation(tmp_path: pathlib.Path) -> None:
    with dynsec_broker(tmp_path) as broker:
        central = system.Central(tmp_path / "central", broker.url)
        with central.config.open("a") as config:
            config.write(
                'mqtt_username = "admin"\nmqtt_password = "admin-secret"\nbroker_dynsec = true\n'
            )
        settings = central_settings.load(central.config)
        assert asyncio.run(bridge.anonymous_allowed(settings)) is False  # the broker refused
        bundle_a = tmp_path / "a.toml"
        admin_token = central.provision(bundle_a)
        bundle_b = tmp_path / "b.toml"
        central.cli(
            "device",
            "add",
            "--site",
            "campus",
            "--room",
            "a-101",
            "--device",
            "pi-b202",
            "--bundle",
            str(bundle_b),
        )
        assert tomllib.loads(bundle_a.read_text())["mqtt_username"] == "campus-pi-a101"
        agent = system.Agent(
            tmp_path / "agent", bundle_a, "slot_s = 5\nrequire_trusted_time = false\n"
        )
        central.start()
        agent.start()
        try:
            admin = system.Http(central.url, admin_token)

            def stored() -> bool:
                _, body, _ = admin.request("GET", "/api/v1/devices")
                return any(d["device"] == "pi-a101" and d["last_seq"] >= 1 for d in body["devices"])

            system.wait_for(stored, 60, "the device's proofs through its own account")

            def online() -> bool | None:
                _, body, _ = admin.request("GET", "/api/v1/devices")
                return next(d["online"] for d in body["devices"] if d["device"] == "pi-a101")

            # The agent's signed status: online once enrolled and drained, offline on a stop.
            system.wait_for(online, 30, "the device's signed online")
            mine, theirs, own_cmd, other_cmd = asyncio.run(
                try_as(broker, tomllib.loads(bundle_b.read_text()), "pi-b202", "pi-a101")
            )
            assert mine < 0x80 and own_cmd < 0x80
            assert theirs == 0x87 and other_cmd == 0x87  # not authorized

            revoked = central.cli("device", "revoke", "--site", "campus", "--device", "pi-b202")
            assert "revoked" in revoked.stdout
            with pytest.raises(aiomqtt.MqttError):
                asyncio.run(
                    try_as(broker, tomllib.loads(bundle_b.read_text()), "pi-b202", "pi-a101")
                )
            _, body, _ = admin.request("GET", "/api/v1/devices")
            assert [d["enrolled"] for d in body["devices"] if d["device"] == "pi-b202"] == [False]
            agent.stop()
            system.wait_for(lambda: online() is False, 30, "the device's signed offline")
            _, body, _ = admin.request("GET", "/api/v1/rejections")
            assert not {"bad_signature", "stale"} & set(body["counts"]), body
        finally:
            if agent.process is not None:
                agent.stop(signal.SIGKILL)
            central.stop()
