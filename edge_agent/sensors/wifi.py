"""WiFi access points from 802.11 beacons and probe responses (scapy).

Three sources give the same sightings: a monitor-mode sniffer (`monitor:IFACE`, with optional
channel hopping), `iw dev IFACE scan` for radios without monitor mode (`iw:IFACE`), and a
pcap/pcapng replay (`pcap:PATH`) for site surveys and tests. A malformed frame is counted and
skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import re
import shutil
import time
import typing

from scapy import sendrecv
from scapy import utils as scapy_utils
from scapy.layers import dot11  # also registers the radiotap and 802.11 link types

from edge_agent.sensors import sighting

log = logging.getLogger(__name__)


def ssid_text(raw: bytes) -> str:
    """Hidden SSIDs (empty or NUL-filled) are ""; non-UTF-8 ones are `0x` + hex."""
    if not raw.strip(b"\x00"):
        return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + raw.hex()


def valid_channel(channel: object) -> int | None:
    """A channel as the proof carries it (0..233, 802.11's range); anything else is unknown:
    one hostile beacon must not make the device's proofs invalid."""
    return channel if isinstance(channel, int) and 0 <= channel <= 233 else None


def valid_rssi(rssi: object) -> int | None:
    return rssi if isinstance(rssi, int) and -127 <= rssi <= 20 else None


def channel_of(frequency_mhz: int | None) -> int | None:
    if not frequency_mhz:
        return None
    if frequency_mhz == 2484:
        return 14
    if 2412 <= frequency_mhz < 2484:
        return (frequency_mhz - 2407) // 5
    if 5000 <= frequency_mhz < 5925:
        return (frequency_mhz - 5000) // 5
    if 5925 < frequency_mhz <= 7125:
        return (frequency_mhz - 5950) // 5
    return None


def decode(packet: typing.Any) -> dict[str, typing.Any] | None:
    """A beacon or probe response as {bssid, ssid, channel, rssi, crypto}; None otherwise."""
    frame = packet.getlayer(dot11.Dot11Beacon) or packet.getlayer(dot11.Dot11ProbeResp)
    if frame is None or not packet.haslayer(dot11.Dot11):
        return None
    bssid = packet[dot11.Dot11].addr3
    if not isinstance(bssid, str) or not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", bssid):
        return None
    element = packet.getlayer(dot11.Dot11Elt)
    ssid = ssid_text(bytes(element.info)) if element is not None and element.ID == 0 else ""
    stats = frame.network_stats()
    channel = stats.get("channel")
    rssi = None
    if packet.haslayer(dot11.RadioTap):
        radiotap = packet[dot11.RadioTap]
        rssi = getattr(radiotap, "dBm_AntSignal", None)
        if channel is None:
            channel = channel_of(getattr(radiotap, "ChannelFrequency", None))
    return {
        "bssid": bssid.lower(),
        "ssid": ssid,
        "channel": valid_channel(channel),
        "rssi": valid_rssi(rssi),
        "crypto": sorted(str(c) for c in stats.get("crypto", ())),
    }


def to_sighting(ap: dict[str, typing.Any], at: float) -> sighting.Sighting:
    fields = {
        "sensor": "wifi",
        "bssid": ap["bssid"],
        "ssid": ap["ssid"],
        "channel": ap["channel"],
        "rssi": ap["rssi"],
    }
    return sighting.Sighting("wifi", ap["bssid"], ap["rssi"], fields, at)


class Decoder:
    """Decodes frames, counting what could not be read instead of failing."""

    def __init__(self) -> None:
        self.frames = 0
        self.malformed = 0

    def sighting(self, packet: typing.Any) -> sighting.Sighting | None:
        self.frames += 1
        try:
            ap = decode(packet)
        except Exception as exc:  # scapy raises many types on hostile frames
            self.malformed += 1
            log.debug("skipped a malformed 802.11 frame: %s", exc)
            return None
        return to_sighting(ap, time.monotonic()) if ap is not None else None


class PcapSource:
    """`pcap:PATH[?speed=N]`: a capture replayed at its recorded pace, once."""

    name = "wifi"
    mode = "pcap"

    def __init__(self, path: pathlib.Path, speed: float = 1.0) -> None:
        self.path = path
        self.speed = speed
        self.decoder = Decoder()

    async def run(self, emit: sighting.Emit) -> None:
        try:
            reader = scapy_utils.PcapReader(str(self.path))
        except (OSError, ValueError) as exc:  # scapy raises Scapy_Exception, a subclass
            raise sighting.SensorProblem(f"{self.path}: {exc}") from exc
        started = time.monotonic()
        first: float | None = None
        with reader:
            while True:
                try:
                    packet = reader.read_packet()
                except EOFError:
                    return
                except Exception as exc:
                    self.decoder.malformed += 1
                    log.info("%s: stopped at an unreadable record: %s", self.path, exc)
                    return
                stamp = float(packet.time)
                first = stamp if first is None else first
                delay = started + max(0.0, stamp - first) / self.speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(min(delay, 5.0))
                found = self.decoder.sighting(packet)
                if found is not None:
                    emit(found)


class MonitorSource:
    """`monitor:IFACE`: live beacons on a monitor-mode (radiotap) interface."""

    name = "wifi"
    mode = "monitor"

    def __init__(self, iface: str, hop_channels: list[int], hop_s: float) -> None:
        self.iface = iface
        self.hop_channels = hop_channels
        self.hop_s = hop_s
        self.decoder = Decoder()

    async def run(self, emit: sighting.Emit) -> None:
        loop = asyncio.get_running_loop()

        def on_frame(packet: typing.Any) -> None:
            found = self.decoder.sighting(packet)
            if found is not None:
                loop.call_soon_threadsafe(emit, found)

        try:
            sniffer = sendrecv.AsyncSniffer(iface=self.iface, prn=on_frame, store=False)
            sniffer.start()
        except (OSError, ValueError) as exc:
            raise sighting.SensorProblem(f"monitor {self.iface}: {exc}") from exc
        try:
            while True:
                await asyncio.sleep(self.hop_s if self.hop_channels else 1.0)
                if not sniffer.running:
                    raise sighting.SensorProblem(f"monitor {self.iface}: capture stopped")
                if self.hop_channels:
                    await self._hop()
        finally:
            with contextlib.suppress(Exception):
                sniffer.stop(join=False)

    async def _hop(self) -> None:
        channel = self.hop_channels.pop(0)
        self.hop_channels.append(channel)
        process = await asyncio.create_subprocess_exec(
            "iw",
            "dev",
            self.iface,
            "set",
            "channel",
            str(channel),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, error = await process.communicate()
        if process.returncode != 0:
            log.info("channel hop to %d failed: %s", channel, error.decode(errors="replace")[:200])


_BSS = re.compile(r"^BSS ((?:[0-9a-f]{2}:){5}[0-9a-f]{2})", re.IGNORECASE)


def parse_iw_scan(text: str) -> list[dict[str, typing.Any]]:
    """Access points in `iw dev IFACE scan` output (the one text format iw offers)."""
    found: list[dict[str, typing.Any]] = []
    current: dict[str, typing.Any] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        match = _BSS.match(line)
        if match:
            current = {
                "bssid": match.group(1).lower(),
                "ssid": "",
                "channel": None,
                "rssi": None,
                "crypto": [],
            }
            found.append(current)
            continue
        if current is None:
            continue
        if line.startswith("signal:"):
            with contextlib.suppress(ValueError, IndexError, OverflowError):
                current["rssi"] = valid_rssi(round(float(line.split()[1])))
        elif line.startswith("freq:") and current["channel"] is None:
            with contextlib.suppress(ValueError, IndexError, OverflowError):
                current["channel"] = valid_channel(channel_of(round(float(line.split()[1]))))
        elif line.startswith("SSID:"):
            value = line[5:].strip()
            current["ssid"] = ssid_text(_unescape_iw(value))
        elif line.startswith(("DS Parameter set: channel", "* primary channel:")):
            with contextlib.suppress(ValueError):
                current["channel"] = valid_channel(int(line.rsplit(maxsplit=1)[-1]))
    return found


_IW_ESCAPE = re.compile(r"(\\x[0-9a-fA-F]{2})")


def _unescape_iw(value: str) -> bytes:
    """iw prints non-printable SSID bytes as \\xNN."""
    return b"".join(
        bytes([int(part[2:], 16)]) if _IW_ESCAPE.fullmatch(part) else part.encode()
        for part in _IW_ESCAPE.split(value)
    )


class IwScanSource:
    """`iw:IFACE`: periodic `iw dev IFACE scan`, for radios without monitor mode."""

    name = "wifi"
    mode = "iw"

    def __init__(self, iface: str, interval_s: float) -> None:
        self.iface = iface
        self.interval_s = interval_s

    async def run(self, emit: sighting.Emit) -> None:
        iw = shutil.which("iw")
        if iw is None:
            raise sighting.SensorProblem("iw is not installed (Debian package iw)")
        while True:
            process = await asyncio.create_subprocess_exec(
                iw,
                "dev",
                self.iface,
                "scan",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            output, error = await process.communicate()
            if process.returncode != 0:
                message = error.decode(errors="replace").strip()[:200]
                raise sighting.SensorProblem(f"iw dev {self.iface} scan: {message}")
            now = time.monotonic()
            for ap in parse_iw_scan(output.decode(errors="replace")):
                emit(to_sighting(ap, now))
            await asyncio.sleep(self.interval_s)
