"""BLE beacons through bleak, kept alive by a watchdog, or replayed from a recording.

BlueZ scanning is known to stop silently or to refuse with org.bluez.Error.InProgress; the
watchdog notices silence, marks the scanner down at once and schedules one restart under a
lock (a restart under way is not doubled), the way Home Assistant's habluetooth does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import pathlib
import time
import typing

from edge_agent.sensors import beacons
from edge_agent.sensors import sighting

log = logging.getLogger(__name__)
MAX_REPLAY_S = 7 * 86400.0  # a recording longer than a week is not a site survey


def sightings(
    manufacturer_data: typing.Mapping[int, bytes],
    service_data: typing.Mapping[str, bytes],
    rssi: int | None,
    at: float,
) -> list[sighting.Sighting]:
    found = []
    for beacon in beacons.decode(manufacturer_data, service_data):
        if beacon["kind"] == "eddystone-tlm":
            continue  # telemetry of a beacon, not an identity
        ident = beacons.identity(beacon)
        fields = {
            "sensor": "ble",
            "kind": beacon["kind"],
            "id": ident,
            "rssi": rssi,
            "tx_power": beacons.tx_power(beacon),
        }
        found.append(sighting.Sighting("ble", f"{beacon['kind']}:{ident}", rssi, fields, at))
    return found


class Watchdog:
    """Restarts a scanner that went silent or failed; counts and reports each restart."""

    def __init__(
        self,
        start: typing.Callable[[], typing.Awaitable[None]],
        stop: typing.Callable[[], typing.Awaitable[None]],
        silence_s: float,
        clock: typing.Callable[[], float] = time.monotonic,
    ) -> None:
        self._start = start
        self._stop = stop
        self.silence_s = silence_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self.scanning = False
        self._restarting = False
        self.restarts = 0
        self.last_error: str | None = None
        self.last_seen = clock()

    def seen(self) -> None:
        """Called from the detection callback for every advertisement."""
        self.last_seen = self._clock()

    async def ensure_started(self) -> None:
        async with self._lock:
            if self.scanning:
                return
            try:
                await self._start()
            except Exception as exc:  # bleak raises BleakError, BlueZ DBusError, OSError
                self.last_error = _describe(exc)
                log.warning("BLE scanner did not start: %s", self.last_error)
                return
            self.scanning = True
            self.last_error = None
            self.last_seen = self._clock()

    async def restart(self, reason: str) -> None:
        if self._restarting:
            return  # one restart at a time; the one under way will bring the scanner back
        self._restarting = True
        self.scanning = False  # marked down at once
        try:
            async with self._lock:
                self.restarts += 1
                self.last_error = reason
                log.warning("restarting BLE scanner (%s), restart #%d", reason, self.restarts)
                try:
                    await self._stop()
                except Exception as exc:
                    log.info("stopping the BLE scanner failed: %s", _describe(exc))
            await self.ensure_started()
        finally:
            self._restarting = False

    async def check(self) -> None:
        """One watchdog tick: start a stopped scanner, restart a silent one."""
        if not self.scanning:
            await self.ensure_started()
        elif self._clock() - self.last_seen > self.silence_s:
            await self.restart(f"no advertisement for {self.silence_s:.0f}s")

    async def run(self, tick_s: float) -> None:
        while True:
            await self.check()
            await asyncio.sleep(tick_s)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "org.bluez.Error.InProgress" in text:
        return "BlueZ busy (org.bluez.Error.InProgress)"
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return "no D-Bus system bus or BlueZ (is bluetoothd running?)"
    return text[:200]


class BleakSource:
    """Live scanning through bleak on a BlueZ adapter (`bleak` or `bleak:hci1`)."""

    name = "ble"

    def __init__(self, adapter: str | None, silence_s: float, passive: bool) -> None:
        self.adapter = adapter
        self.silence_s = silence_s
        self.passive = passive
        self.watchdog: Watchdog | None = None

    async def run(self, emit: sighting.Emit) -> None:
        import bleak  # heavy and Linux/D-Bus specific: only when BLE is enabled

        def on_advertisement(device: typing.Any, data: typing.Any) -> None:
            assert self.watchdog is not None
            self.watchdog.seen()
            for found in sightings(
                data.manufacturer_data, data.service_data, data.rssi, time.monotonic()
            ):
                emit(found)

        bluez: dict[str, typing.Any] = {"adapter": self.adapter} if self.adapter else {}
        if self.passive:
            bluez["or_patterns"] = [(0, 0xFF, b"\x4c\x00"), (0, 0x16, b"\xaa\xfe")]
        scanner = bleak.BleakScanner(
            detection_callback=on_advertisement,
            scanning_mode="passive" if self.passive else "active",
            bluez=bluez,  # type: ignore[arg-type]
        )
        self.watchdog = Watchdog(scanner.start, scanner.stop, self.silence_s)
        try:
            await self.watchdog.run(max(1.0, self.silence_s / 4))
        finally:
            if self.watchdog.scanning:
                await scanner.stop()

    def status(self) -> str | None:
        if self.watchdog is None or self.watchdog.scanning:
            return None
        return self.watchdog.last_error or "not scanning"


class ReplaySource:
    """Recorded advertisements, one JSON object per line in bleak's form: `t` (seconds since
    start), `rssi`, `manufacturer_data` ({"76": hex}), `service_data` ({uuid: hex}).
    Played once at the recorded pace (times `speed`), then end-of-data."""

    name = "ble"

    def __init__(self, path: pathlib.Path, speed: float = 1.0) -> None:
        self.path = path
        self.speed = speed
        self.rejected = 0

    async def run(self, emit: sighting.Emit) -> None:
        try:
            lines = self.path.read_text().splitlines()
        except OSError as exc:
            raise sighting.SensorProblem(f"{self.path}: {exc.strerror}") from exc
        started = time.monotonic()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                manufacturer = {
                    int(k): bytes.fromhex(v) for k, v in record.get("manufacturer_data", {}).items()
                }
                service = {
                    str(k): bytes.fromhex(v) for k, v in record.get("service_data", {}).items()
                }
                rssi = record.get("rssi")
                offset = float(record.get("t", 0)) / self.speed
                if not (math.isfinite(offset) and 0 <= offset <= MAX_REPLAY_S):
                    raise ValueError(f"t must be 0..{MAX_REPLAY_S:g} s into the recording")
                if rssi is not None and not isinstance(rssi, int):
                    raise ValueError("rssi must be an integer")
            except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
                self.rejected += 1
                log.info("%s:%d: skipped a malformed record (%s)", self.path, number, exc)
                continue
            delay = started + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for found in sightings(manufacturer, service, rssi, time.monotonic()):
                emit(found)
