"""Sensor sources named by one string each, as in the agent's settings:

wifi_source = monitor:IFACE | iw:IFACE | pcap:PATH[?speed=N] | off
ble_source  = bleak | bleak:ADAPTER | replay:PATH[?speed=N] | off
gps_source  = gpsd://HOST:PORT | serial:DEVICE[?baud=N] | replay:PATH[?speed=N] | off
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
import typing
import urllib.parse

KINDS = {
    "wifi": ("monitor", "iw", "pcap"),
    "ble": ("bleak", "replay"),
    "gps": ("gpsd", "serial", "replay"),
}
_IFACE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")


OPTION_MAX = {"speed": 1000.0, "baud": 4_000_000.0}


@dataclasses.dataclass(frozen=True)
class Spec:
    sensor: str
    kind: str
    target: str
    options: dict[str, str]

    def number(self, key: str, default: float) -> float:
        return float(self.options.get(key, default))


def parse(sensor: str, text: str) -> Spec | None:
    """The source a setting names, None for `off`; ValueError says what is wrong."""
    text = text.strip()
    if text == "off":
        return None
    if sensor == "ble" and text == "bleak":
        return Spec("ble", "bleak", "", {})
    if sensor == "gps" and text.startswith("gpsd://"):
        location = urllib.parse.urlsplit(text)
        try:
            port = location.port or 2947
        except ValueError as exc:
            raise ValueError(f"{text!r}: invalid port") from exc
        if not location.hostname:
            raise ValueError(f"{text!r}: expected gpsd://HOST:PORT")
        return Spec("gps", "gpsd", f"{location.hostname}:{port}", {})
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS[sensor] or kind == "gpsd":
        choices = {
            "wifi": "monitor:IFACE, iw:IFACE, pcap:PATH or off",
            "ble": "bleak, bleak:ADAPTER, replay:PATH or off",
            "gps": "gpsd://HOST:PORT, serial:DEVICE?baud=N, replay:PATH or off",
        }[sensor]
        raise ValueError(f"{text!r}: expected {choices}")
    target, _, query = rest.partition("?")
    options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    unknown = set(options) - {"speed", "baud"}
    if unknown:
        raise ValueError(f"{text!r}: unknown option(s) {sorted(unknown)}")
    for key in options:
        try:
            value = float(options[key])
            if not (math.isfinite(value) and 0 < value <= OPTION_MAX[key]):
                raise ValueError
            if key == "baud" and value != int(value):
                raise ValueError
        except ValueError as exc:
            raise ValueError(
                f"{text!r}: {key} must be a number in (0, {OPTION_MAX[key]:g}]"
                + (" and whole" if key == "baud" else "")
            ) from exc
    if not target:
        raise ValueError(f"{text!r}: names no interface, adapter, device or file")
    if kind in ("monitor", "iw", "bleak") and not _IFACE.fullmatch(target):
        raise ValueError(f"{text!r}: {target!r} is not an interface name")
    return Spec(sensor, kind, target, options)


def build(spec: Spec, settings: typing.Any) -> typing.Any:
    """The source object for a parsed spec (imports each sensor's library only when used)."""
    if spec.sensor == "wifi":
        from edge_agent.sensors import wifi

        if spec.kind == "monitor":
            return wifi.MonitorSource(
                spec.target, list(settings.wifi_hop_channels), settings.wifi_hop_s
            )
        if spec.kind == "iw":
            return wifi.IwScanSource(spec.target, settings.wifi_scan_interval_s)
        return wifi.PcapSource(pathlib.Path(spec.target), spec.number("speed", 1))
    if spec.sensor == "ble":
        from edge_agent.sensors import ble

        if spec.kind == "bleak":
            return ble.BleakSource(
                spec.target or None, settings.ble_silence_s, settings.ble_passive
            )
        return ble.ReplaySource(pathlib.Path(spec.target), spec.number("speed", 1))
    from edge_agent.sensors import gps

    if spec.kind == "gpsd":
        host, _, port = spec.target.rpartition(":")
        return gps.GpsdSource(host, int(port))
    if spec.kind == "serial":
        return gps.SerialSource(spec.target, int(spec.number("baud", 9600)))
    return gps.ReplaySource(pathlib.Path(spec.target), spec.number("speed", 1))
