"""WiFi on real captures: decoder, pcap replay, and a live sniffer on a real kernel interface."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import fcntl
import os
import pathlib
import struct
import subprocess
import typing
import uuid

import pytest
from scapy.utils import PcapReader
from scapy.utils import rdpcap

from edge_agent.sensors import sighting
from edge_agent.sensors import wifi

TUNSETIFF = 0x400454CA
TUNSETLINK = 0x400454CD
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
ARPHRD_IEEE80211_RADIOTAP = 803


def expected(shared_data: pathlib.Path) -> list[dict[str, object]]:
    path = shared_data / "wifi" / "ssid-logger-beacons.expected.csv"
    with path.open() as handle:
        return [
            {
                "bssid": row["bssid"],
                "ssid": row["ssid"],
                "channel": int(row["channel"]),
                "rssi": int(row["rssi_dbm"]),
            }
            for row in csv.DictReader(handle)
        ]


def key(ap: dict[str, object]) -> tuple[object, ...]:
    return (ap["bssid"], ap["ssid"], ap["channel"], ap["rssi"])


def test_every_beacon_matches_the_reference(shared_data: pathlib.Path) -> None:
    frames = rdpcap(str(shared_data / "wifi" / "ssid-logger-beacons.pcap"))
    decoded = [wifi.decode(frame) for frame in frames]
    assert all(ap is not None for ap in decoded)
    assert sorted(key(ap) for ap in decoded if ap) == sorted(key(e) for e in expected(shared_data))
    hidden = [ap for ap in decoded if ap and ap["bssid"] == "70:6d:15:61:a8:e7"]
    assert hidden and hidden[0]["ssid"] == ""


def test_non_utf8_ssid(shared_data: pathlib.Path) -> None:
    (frame,) = rdpcap(str(shared_data / "wifi" / "aircrack-Chinese-SSID-Name.pcap"))
    ap = wifi.decode(frame)
    assert ap is not None and ap["ssid"] == "0xb2e2cad4" and ap["channel"] == 6


def test_every_capture_decodes_without_a_crash(shared_data: pathlib.Path) -> None:
    captures = [
        p for p in sorted((shared_data / "wifi").iterdir()) if p.suffix in (".pcap", ".cap")
    ]
    assert len(captures) >= 18
    beacons = 0
    for capture in captures:
        decoder = wifi.Decoder()
        with PcapReader(str(capture)) as reader:
            for frame in reader:
                if decoder.sighting(frame) is not None:
                    beacons += 1
        assert decoder.frames >= 1, capture.name
    assert beacons >= 240


async def test_pcap_replay(shared_data: pathlib.Path) -> None:
    seen: list[sighting.Sighting] = []
    source = wifi.PcapSource(shared_data / "wifi" / "ssid-logger-beacons.pcap", speed=1000)
    await source.run(seen.append)
    assert sorted(key(s.fields) for s in seen) == sorted(key(e) for e in expected(shared_data))
    with pytest.raises(sighting.SensorProblem):
        await wifi.PcapSource(shared_data / "wifi" / "missing.pcap").run(seen.append)


IW_SCAN = """BSS 00:11:22:33:44:55(on wlan0) -- associated
\tfreq: 2437
\tsignal: -48.00 dBm
\tSSID: eduroam
\tDS Parameter set: channel 6
BSS aa:bb:cc:dd:ee:ff(on wlan0)
\tfreq: 5180
\tsignal: -71.00 dBm
\tSSID: caf\\xc3\\xa9
BSS 10:20:30:40:50:60(on wlan0)
\tfreq: 2412
\tsignal: -90.00 dBm
\tSSID: \\x00\\x00\\x00
"""


def test_iw_scan_output() -> None:
    aps = wifi.parse_iw_scan(IW_SCAN)
    assert [(a["bssid"], a["ssid"], a["channel"], a["rssi"]) for a in aps] == [
        ("00:11:22:33:44:55", "eduroam", 6, -48),
        ("aa:bb:cc:dd:ee:ff", "café", 36, -71),
        ("10:20:30:40:50:60", "", 1, -90),
    ]
    assert wifi.parse_iw_scan("garbage\nBSS nonsense\n\tsignal: x dBm") == []


@contextlib.contextmanager
def radiotap_tap() -> typing.Iterator[tuple[str, int]]:
    """A TAP interface whose link type is radiotap: it behaves like a monitor interface."""
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs root and /dev/net/tun to create a radiotap TAP interface")
    name = f"rpmon{uuid.uuid4().hex[:6]}"
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        fcntl.ioctl(fd, TUNSETLINK, ARPHRD_IEEE80211_RADIOTAP)
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name, fd
    finally:
        os.close(fd)


async def test_live_sniffer_on_a_radiotap_interface(shared_data: pathlib.Path) -> None:
    frames = [bytes(f) for f in rdpcap(str(shared_data / "wifi" / "ssid-logger-beacons.pcap"))]
    hostile = [
        f
        for name in (
            "tcpdump-radiotap-heapoverflow.pcap",
            "scapy-bad_rsn_parsing_overrides_ssid.pcap",
        )
        for f in rdpcap(str(shared_data / "wifi" / name))
    ]
    malformed = [bytes(f) for f in hostile]
    with radiotap_tap() as (iface, fd):
        source = wifi.MonitorSource(iface, hop_channels=[], hop_s=1)
        seen: list[sighting.Sighting] = []
        task = asyncio.create_task(source.run(seen.append))
        try:
            async with asyncio.timeout(20):
                while source.decoder.frames == 0:
                    os.write(fd, frames[0])
                    await asyncio.sleep(0.2)
                for frame in malformed + frames:
                    with contextlib.suppress(OSError):  # the kernel refuses runt frames itself
                        os.write(fd, frame)
                    await asyncio.sleep(0.005)
                wanted = len({e["bssid"] for e in expected(shared_data)})
                while len({s.key for s in seen}) < wanted:  # noqa: ASYNC110 - frames via a thread
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    reference = {key(e) for e in expected(shared_data)}
    # A malformed RSN element does not hide the rest of that beacon; the heap-overflow
    # frame yields nothing. Either way the sniffer goes on.
    reference |= {key(ap) for frame in hostile if (ap := wifi.decode(frame)) is not None}
    assert {key(s.fields) for s in seen} == reference
