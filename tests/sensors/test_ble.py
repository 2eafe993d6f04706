"""The BLE watchdog driven through the callbacks bleak calls, and the replay source."""

from __future__ import annotations

import asyncio
import json
import pathlib

from edge_agent.sensors import ble
from edge_agent.sensors import sighting


class ScannerCalls:
    """Stands in for BlueZ (no controller here): records start/stop, can refuse like BlueZ."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.refuse_next = 0

    async def start(self) -> None:
        self.calls.append("start")
        await asyncio.sleep(0)  # a D-Bus round trip yields to the loop
        if self.refuse_next:
            self.refuse_next -= 1
            raise RuntimeError("[org.bluez.Error.InProgress] Operation already in progress")

    async def stop(self) -> None:
        self.calls.append("stop")
        await asyncio.sleep(0)


async def test_watchdog_restarts_a_silent_scanner() -> None:
    now = [0.0]
    scanner = ScannerCalls()
    dog = ble.Watchdog(scanner.start, scanner.stop, silence_s=30, clock=lambda: now[0])
    await dog.check()
    assert scanner.calls == ["start"] and dog.scanning
    for _ in range(5):  # advertisements keep arriving: nothing happens
        now[0] += 10
        dog.seen()
        await dog.check()
    assert scanner.calls == ["start"] and dog.restarts == 0
    now[0] += 31  # silence
    await dog.check()
    assert scanner.calls == ["start", "stop", "start"] and dog.restarts == 1 and dog.scanning


async def test_watchdog_survives_bluez_in_progress() -> None:
    now = [0.0]
    scanner = ScannerCalls()
    scanner.refuse_next = 2
    dog = ble.Watchdog(scanner.start, scanner.stop, silence_s=30, clock=lambda: now[0])
    await dog.check()
    assert not dog.scanning and dog.last_error == "BlueZ busy (org.bluez.Error.InProgress)"
    await dog.check()
    assert not dog.scanning
    await dog.check()
    assert dog.scanning and dog.last_error is None and scanner.calls == ["start"] * 3


async def test_concurrent_restarts_are_not_doubled() -> None:
    now = [100.0]
    scanner = ScannerCalls()
    dog = ble.Watchdog(scanner.start, scanner.stop, silence_s=30, clock=lambda: now[0])
    await dog.check()
    await asyncio.gather(dog.restart("silence"), dog.restart("silence"))
    assert scanner.calls == ["start", "stop", "start"] and dog.restarts == 1 and dog.scanning


async def test_replay_of_recorded_advertisements(
    shared_data: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    vectors = json.loads((shared_data / "ble" / "advertisements.json").read_text())["vectors"]
    recording = tmp_path / "ble.jsonl"
    lines = [
        json.dumps({"t": n * 0.01, "rssi": -60 - n, **v["bleak"]}) for n, v in enumerate(vectors)
    ]
    lines.insert(3, "{not json")
    lines.insert(5, json.dumps({"t": 0, "manufacturer_data": {"x": "zz"}}))
    recording.write_text("\n".join(lines) + "\n")
    seen: list[sighting.Sighting] = []
    source = ble.ReplaySource(recording, speed=10)
    await source.run(seen.append)
    expected = [b for v in vectors for b in v["expected_beacons"] if b["kind"] != "eddystone-tlm"]
    assert [s.fields["kind"] for s in seen] == [b["kind"] for b in expected]
    assert source.rejected == 2
    first = seen[0].fields
    assert first == {
        "sensor": "ble",
        "kind": "ibeacon",
        "id": "d546df97-4757-47ef-be09-3e2dcbdd0c77/5430/52681",
        "rssi": -60,
        "tx_power": -75,
    }
