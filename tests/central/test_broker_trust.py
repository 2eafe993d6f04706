"""F7 of issue 13: on a broker anyone can reach, central acts only on what its devices signed.

An outsider on the (anonymous) test broker publishes a fake `offline`, fake telemetry and a
fake command result for an enrolled device: central ignores and counts each, and the API keeps
showing the real values. Central refuses to start on an anonymous broker unless
`allow_anonymous_broker` is set, and warns when it is.
"""

from __future__ import annotations

import json
import logging
import pathlib
import subprocess
import sys
import time

import aiohttp
import aiomqtt
import pytest
from aiohttp import test_utils
from aiohttp import web

from central import app as app_mod
from central.core import settings as settings_mod
from central.ingest import bridge as bridge_mod
from edge_agent import mqttlink
from edge_agent.protocol import keys
from edge_agent.protocol import report
from tests import broker as broker_mod
from tests.central import conftest

OLD_BOOT = "fedcba9876543210"


async def device_row(central: conftest.Central, name: str) -> dict:
    status, body = await central.request("GET", "/api/v1/devices", token=central.admin_token)
    assert status == 200
    (row,) = [d for d in body["devices"] if d["device"] == name]
    return row


async def sync(central: conftest.Central, device: conftest.ScriptedDevice) -> None:
    """A genuine proof after the messages under test: the bridge handles one device's messages
    in order, so once it is stored every message before it was handled."""
    seq = device.seq + 1
    await central.publish(device.topic("proof"), device.next_proof())

    async def stored() -> bool:
        return seq in await central.stored_seqs(device.device)

    await conftest.poll(stored, 10, f"proof {seq} to be stored")


async def test_outsider_status_telemetry_and_command_results_are_ignored(
    enrolled: tuple[conftest.Central, conftest.ScriptedDevice],
) -> None:
    central, device = enrolled
    await central.db.set_online(central.site, device.device, True, int(time.time() * 1000))
    path = f"/api/v1/devices/{central.site}/{device.device}/commands"
    status, body = await central.request(
        "POST", path, {"kind": "status_report"}, token=central.admin_token
    )
    assert status == 201
    nonce = body["command"]["nonce"]
    before = await central.rejections()

    # What an outsider on an anonymous broker could send before: plain, unsigned messages.
    await central.mqtt.publish(device.topic("status"), b"offline", qos=1, retain=True)
    fake_depth = {"v": 1, "iat": int(time.time() * 1000), "outbox_depth": {"proof": 424242}}
    await central.publish(device.topic("telemetry"), json.dumps(fake_depth))
    fake_result = {"v": 1, "type": "command_result", "nonce": nonce, "outcome": "applied"}
    await central.publish(device.topic("telemetry"), json.dumps(fake_result))
    # ... and the same, signed by a key that is not the device's.
    stranger = conftest.ScriptedDevice(
        central.site, central.room, device.device, keys.SigningKey.generate()
    )
    await central.publish(device.topic("status"), stranger.report(report.Status, state="offline"))
    await central.publish(
        device.topic("telemetry"), stranger.report(report.Telemetry, outbox_depth={"proof": 424242})
    )
    await central.publish(
        device.topic("telemetry"),
        stranger.report(report.CommandResult, nonce=nonce, kind="status_report", outcome="applied"),
    )
    await sync(central, device)

    row = await device_row(central, device.device)
    status, body = await central.request("GET", path, token=central.admin_token)
    outcomes = [c["outcome"] for c in body["commands"]]
    # All three at once, so a failure shows what each forgery did.
    assert (row["online"], row["telemetry"], outcomes) == (True, None, ["sent"])
    after = await central.rejections()
    assert after.get("unsigned", 0) - before.get("unsigned", 0) == 3
    assert after.get("bad_signature", 0) - before.get("bad_signature", 0) == 3
    await central.mqtt.publish(device.topic("status"), b"", qos=1, retain=True)  # clean up


async def test_the_devices_signed_reports_count_and_old_ones_do_not(
    enrolled: tuple[conftest.Central, conftest.ScriptedDevice],
) -> None:
    central, device = enrolled
    path = f"/api/v1/devices/{central.site}/{device.device}/commands"
    status, body = await central.request(
        "POST", path, {"kind": "status_report"}, token=central.admin_token
    )
    assert status == 201
    nonce = body["command"]["nonce"]
    now = int(time.time() * 1000)
    # The proofs' boot is the current session; the will of an earlier boot must not count.
    await central.publish(
        device.topic("status"), device.report(report.Status, state="online", iat=now)
    )
    telemetry = device.report(report.Telemetry, iat=now, uptime_s=5, outbox_depth={"proof": 3})
    await central.publish(device.topic("telemetry"), telemetry)
    await central.publish(
        device.topic("telemetry"),
        device.report(report.CommandResult, nonce=nonce, kind="status_report", outcome="applied"),
    )
    await sync(central, device)
    row = await device_row(central, device.device)
    assert row["online"] is True and row["telemetry"]["outbox_depth"] == {"proof": 3}
    _, body = await central.request("GET", path, token=central.admin_token)
    assert [c["outcome"] for c in body["commands"]] == ["applied"]

    before = await central.rejections()
    old_will = device.report(report.Status, state="offline", boot=OLD_BOOT, iat=now + 1)
    await central.publish(device.topic("status"), old_will)
    older_will = device.report(report.Status, state="offline", iat=now - 60_000)
    await central.publish(device.topic("status"), older_will)
    await central.publish(device.topic("telemetry"), telemetry)  # a replay
    await sync(central, device)
    row = await device_row(central, device.device)
    assert row["online"] is True and row["telemetry"]["uptime_s"] == 5
    after = await central.rejections()
    assert after.get("stale", 0) - before.get("stale", 0) == 3

    await central.publish(
        device.topic("status"), device.report(report.Status, state="offline", iat=now + 2)
    )
    await sync(central, device)
    assert (await device_row(central, device.device))["online"] is False


async def test_central_refuses_an_anonymous_broker_unless_allowed(
    tmp_path: pathlib.Path, broker: broker_mod.Broker, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_mod.CentralSettings(data_dir=tmp_path / "central", mqtt_url=broker.url)
    runner = web.AppRunner(app_mod.build(settings))
    with pytest.raises(bridge_mod.BrokerOpen, match="allow_anonymous_broker"):
        await runner.setup()
    await runner.cleanup()
    allowed = settings.model_copy(update={"allow_anonymous_broker": True})
    with caplog.at_level(logging.WARNING, logger="central.ingest.bridge"):
        assert await bridge_mod.check_broker(allowed) is True
    assert "accepts anonymous clients" in caplog.text


def test_central_serve_refuses_an_anonymous_broker_with_one_line(
    tmp_path: pathlib.Path, broker: broker_mod.Broker
) -> None:
    config = tmp_path / "central.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nhttp_port = {broker_mod.free_port()}\n'
        f'mqtt_url = "{broker.url}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "central", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "allow_anonymous_broker = true" in last
    assert "Traceback" not in done.stderr


async def test_a_broker_found_open_after_the_start_gets_no_subscription(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Central starts while the broker is down (nothing to check yet); the broker then comes
    up anonymous: central checks before its first connection and takes nothing from it."""
    broker = broker_mod.Broker(tmp_path / "mosquitto")  # not started yet
    port = broker_mod.free_port()
    settings = settings_mod.CentralSettings(
        data_dir=tmp_path / "central",
        http_port=port,
        mqtt_url=broker.url,
        mqtt_client_id="central-late-check",
    )
    server = test_utils.TestServer(app_mod.build(settings), host="127.0.0.1", port=port)
    caplog.set_level(logging.CRITICAL, logger="central.ingest.bridge")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            with broker:

                async def refused() -> bool:
                    return "accepts clients without credentials" in caplog.text

                await conftest.poll(refused, 30, "the check of the broker once it is up")
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    assert (await response.json())["mqtt"] == "disconnected"
                async with mqttlink.Client(
                    "127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5
                ) as client:
                    topic = "roomproof/v1/campus/pi-a101/proof"
                    reason = await client.publish_acked(topic, b"x")
                assert reason == mqttlink.NO_MATCHING_SUBSCRIBERS  # central did not subscribe
    finally:
        await server.close()
