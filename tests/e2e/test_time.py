"""An untrusted clock: the room screen waits instead of showing tokens, and says why."""

from __future__ import annotations

import asyncio
import json
import pathlib
import typing
import urllib.request

import aiomqtt
import pytest

from edge_agent import timesource
from edge_agent.protocol import report
from edge_agent.protocol import topics
from tests import broker as broker_mod
from tests import system


@pytest.mark.slow
async def test_waiting_for_time(
    tmp_path: pathlib.Path, own_broker: broker_mod.Broker, shared_data: pathlib.Path
) -> None:
    if timesource.kernel_clock().trusted:
        pytest.skip("this machine's clock is NTP-synchronised; the waiting state cannot show")
    central = system.Central(tmp_path / "central", own_broker.url)
    bundle = tmp_path / "bundle.toml"
    token = central.provision(bundle)
    screen = broker_mod.free_port()
    agent = system.Agent(
        tmp_path / "agent",
        bundle,
        f'slot_s = 5\ntelemetry_interval_s = 1\ndisplay_sinks = ["web"]\nweb_port = {screen}\n'
        f'wifi_source = "pcap:{shared_data}/wifi/ssid-logger-beacons.pcap?speed=50"\n',
    )
    central.start()
    agent.start()
    try:
        async with aiomqtt.Client("127.0.0.1", own_broker.port) as client:
            await client.subscribe(topics.topic("campus", "pi-a101", "telemetry"), qos=1)
            async with asyncio.timeout(60):
                async for message in client.messages:
                    payload = typing.cast(bytes, message.payload)
                    _, signed = report.decode(payload, frozenset({report.TELEMETRY}))
                    telemetry = signed.model_dump()
                    break
        assert telemetry["clock"]["source"] == "none"
        assert telemetry["sensors"]["wifi"]["mode"] == "pcap"
        assert telemetry["sensors"]["wifi"]["status"] in ("ok", "replay ended")

        def frame() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{screen}/frame.json") as response:
                return json.load(response)

        await asyncio.to_thread(system.wait_for, lambda: frame().get("n"), 20, "a frame")
        state = frame()
        assert state["url"] is None and state["code"] is None
        assert state["status"].startswith("waiting for time")
        row = system.Http(central.url, token).request("GET", "/api/v1/devices")[1]["devices"][0]
        assert row["enrolled"] is True and row["last_seq"] == 0, "a proof was made without time"
    finally:
        agent.stop()
        central.stop()
