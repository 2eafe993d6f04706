"""`python -m edge_agent sensors`: the installers' site survey, on replayed recordings."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys


def survey(settings: pathlib.Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "sensors", "--settings", str(settings), *options],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_json_lines_from_replayed_sensors(
    shared_data: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    vectors = json.loads((shared_data / "ble" / "advertisements.json").read_text())["vectors"]
    ble = tmp_path / "ble.jsonl"
    ble.write_text(
        "".join(
            json.dumps({"t": 0.01 * n, "rssi": -70, **v["bleak"]}) + "\n"
            for n, v in enumerate(vectors)
        )
    )
    settings = tmp_path / "agent.toml"
    settings.write_text(
        f'wifi_source = "pcap:{shared_data}/wifi/ssid-logger-beacons.pcap?speed=500"\n'
        f'ble_source = "replay:{ble}"\n'
        f'gps_source = "replay:{shared_data}/gps/gpsd-regress/mt3339.log?speed=50"\n'
    )
    done = survey(settings, "--json", "--duration", "20")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    by_sensor = {name: [x for x in lines if x["sensor"] == name] for name in ("wifi", "ble", "gps")}
    assert len({x["bssid"] for x in by_sensor["wifi"]}) == 29
    assert set(by_sensor["wifi"][0]) == {"sensor", "bssid", "ssid", "channel", "rssi"}
    assert {x["kind"] for x in by_sensor["ble"]} == {
        "ibeacon",
        "altbeacon",
        "eddystone-uid",
        "eddystone-url",
    }
    assert set(by_sensor["ble"][0]) == {"sensor", "kind", "id", "rssi", "tx_power"}
    assert len(by_sensor["gps"]) == 30
    assert {"lat", "lon", "accuracy_m", "mode", "time"} <= set(by_sensor["gps"][0])


def test_errors_are_reported_not_fatal(tmp_path: pathlib.Path) -> None:
    settings = tmp_path / "agent.toml"
    settings.write_text(
        f'wifi_source = "pcap:{tmp_path}/missing.pcap"\nble_source = "bleak:hci7"\n'
    )
    done = survey(settings, "--json", "--duration", "3")
    assert done.returncode == 0, done.stderr
    errors = {x["sensor"]: x["error"] for x in map(json.loads, done.stdout.splitlines())}
    assert "missing.pcap" in errors["wifi"] and errors["ble"]
    table = survey(settings, "--duration", "2")
    assert "WIFI (pcap:" in table.stdout and "missing.pcap" in table.stdout
    nothing = tmp_path / "none.toml"
    nothing.write_text("")
    done = survey(nothing)
    assert done.returncode == 2 and "no sensor is enabled" in done.stderr
