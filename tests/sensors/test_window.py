"""Window aggregation, source strings, and the time source."""

from __future__ import annotations

import datetime
import time

import pytest

from edge_agent import timesource
from edge_agent.protocol import proof
from edge_agent.sensors import sighting
from edge_agent.sensors import sources
from edge_agent.sensors import window


def wifi(bssid: str, rssi: int, at: float) -> sighting.Sighting:
    fields = {"sensor": "wifi", "bssid": bssid, "ssid": "net", "channel": 6, "rssi": rssi}
    return sighting.Sighting("wifi", bssid, rssi, fields, at)


def test_window_aggregates_median_count_and_strongest() -> None:
    now = [100.0]
    win = window.Window(10, strongest=2, clock=lambda: now[0])
    for rssi in (-40, -60, -50):
        win.add(wifi("aa:aa:aa:aa:aa:01", rssi, now[0]))
    win.add(wifi("aa:aa:aa:aa:aa:02", -80, now[0]))
    win.add(wifi("aa:aa:aa:aa:aa:03", -30, now[0] - 20))  # outside the window
    win.add(wifi("aa:aa:aa:aa:aa:04", -70, now[0]))
    rows = win.aggregate("wifi")
    assert [(r["bssid"], r["rssi"], r["seen"]) for r in rows] == [
        ("aa:aa:aa:aa:aa:01", -50, 3),
        ("aa:aa:aa:aa:aa:04", -70, 1),
    ]
    now[0] += 11
    assert win.aggregate("wifi") == []


def test_env_is_a_valid_proof_env_and_names_missing_sensors() -> None:
    now = [50.0]
    win = window.Window(20, clock=lambda: now[0])
    win.add(wifi("aa:aa:aa:aa:aa:01", -45, now[0]))
    gps_fields = {
        "sensor": "gps",
        "lat": 48.1,
        "lon": 11.5,
        "accuracy_m": 4.5,
        "mode": 3,
        "time": "2026-11-22T10:00:00.000Z",
        "satellites": 9,
    }
    win.add(sighting.Sighting("gps", "fix", None, gps_fields, now[0]))
    env = win.env({"wifi": "nothing seen", "ble": "no D-Bus system bus", "gps": "nothing seen"})
    model = proof.Env.model_validate(env)
    assert (
        model.gps is not None
        and model.gps.fix == "3d"
        and model.gps.time
        == int(datetime.datetime(2026, 11, 22, 10, tzinfo=datetime.UTC).timestamp() * 1000)
    )
    assert env["missing"] == {"ble": "no D-Bus system bus"}
    assert [ap.bssid for ap in model.wifi] == ["aa:aa:aa:aa:aa:01"]


@pytest.mark.parametrize(
    "sensor,text,kind,target,options",
    [
        ("wifi", "monitor:wlan1", "monitor", "wlan1", {}),
        ("wifi", "iw:wlan0", "iw", "wlan0", {}),
        ("wifi", "pcap:/srv/survey.pcapng?speed=4", "pcap", "/srv/survey.pcapng", {"speed": "4"}),
        ("ble", "bleak", "bleak", "", {}),
        ("ble", "bleak:hci1", "bleak", "hci1", {}),
        ("ble", "replay:ble.jsonl", "replay", "ble.jsonl", {}),
        ("gps", "gpsd://127.0.0.1:2947", "gpsd", "127.0.0.1:2947", {}),
        ("gps", "serial:/dev/serial0?baud=115200", "serial", "/dev/serial0", {"baud": "115200"}),
    ],
)
def test_source_strings(sensor: str, text: str, kind: str, target: str, options: dict) -> None:
    spec = sources.parse(sensor, text)
    assert spec is not None and (spec.kind, spec.target, spec.options) == (kind, target, options)
    assert sources.parse(sensor, "off") is None


@pytest.mark.parametrize(
    "sensor,text",
    [
        ("wifi", "monitor"),
        ("wifi", "bleak"),
        ("wifi", "monitor:bad iface name!"),
        ("ble", "replay:"),
        ("gps", "serial:/dev/x?baud=fast"),
        ("gps", "gpsd://"),
        ("gps", "pcap:x"),
        ("wifi", "pcap:x?colour=red"),
    ],
)
def test_bad_source_strings(sensor: str, text: str) -> None:
    with pytest.raises(
        ValueError, match=r"expected|invalid|names no|not an interface|must be|unknown"
    ):
        sources.parse(sensor, text)


def test_time_source() -> None:
    kernel = timesource.kernel_clock()
    assert kernel.source in ("ntp", "none") and kernel.uncertainty_ms >= 0
    now_wall, now_mono = time.time(), time.monotonic()
    stamp = datetime.datetime.fromtimestamp(now_wall - 0.3, datetime.UTC).isoformat()
    fresh = sighting.Sighting("gps", "fix", None, {"time": stamp}, now_mono - 0.3)
    status = timesource.gps_clock(fresh, now_wall, now_mono)
    assert status is not None and status.source == "gps" and status.uncertainty_ms < 1000
    old_receiver = sighting.Sighting("gps", "fix", None, {"time": "2014-12-31T03:07:19Z"}, now_mono)
    assert timesource.gps_clock(old_receiver, now_wall, now_mono) is None
    stale = sighting.Sighting("gps", "fix", None, {"time": stamp}, now_mono - 60)
    assert timesource.gps_clock(stale, now_wall, now_mono) is None
    assert timesource.gps_clock(None, now_wall, now_mono) is None


def test_items_the_proof_schema_refuses_are_dropped_and_counted() -> None:
    """The last line of defence: whatever a sensor let through, the proof stays valid."""
    now = [100.0]
    win = window.Window(20.0, clock=lambda: now[0])
    win.add(sighting.Sighting("gps", "fix", None, {"lat": 99.5, "lon": 13.4, "mode": 3}, 99.0))
    for bssid, channel in (("00:11:22:33:44:55", 999), ("66:77:88:99:aa:bb", 6)):
        fields = {"bssid": bssid, "ssid": "campus", "channel": channel, "rssi": -50}
        win.add(sighting.Sighting("wifi", bssid, -50, fields, 99.0))
    env = win.env({})
    assert "gps" not in env
    assert [ap["bssid"] for ap in env["wifi"]] == ["66:77:88:99:aa:bb"]
    assert win.unfit == 2
    proof.Env.model_validate(env)
