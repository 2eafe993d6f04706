"""Position and time from a GPS receiver: through gpsd, straight from NMEA on a serial port,
or replayed from a recorded log.

gpsd is spoken to over its JSON protocol (?WATCH) with asyncio rather than through gpsd-py3,
which is blocking, keeps its socket in module globals and has not been released since 2018.
NMEA is parsed by pynmea2; sentences with a bad checksum are counted and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import pathlib
import threading
import time
import typing

import pynmea2

from edge_agent.sensors import sighting

log = logging.getLogger(__name__)
UERE_M = 5.0  # user-equivalent range error: accuracy ~ HDOP x UERE when the receiver gives none
MAX_LINE = 4096


@dataclasses.dataclass(frozen=True)
class Fix:
    lat: float
    lon: float
    accuracy_m: float | None
    mode: int  # 2 = 2D, 3 = 3D (gpsd's TPV mode)
    satellites: int | None
    time: str | None  # RFC 3339 UTC, from the receiver

    def sighting(self, at: float) -> sighting.Sighting:
        fields = {
            "sensor": "gps",
            "lat": self.lat,
            "lon": self.lon,
            "accuracy_m": self.accuracy_m,
            "mode": self.mode,
            "time": self.time,
            "satellites": self.satellites,
        }
        return sighting.Sighting("gps", "fix", None, fields, at)


class NmeaFixes:
    """Turns a stream of NMEA sentences into fixes, one per valid RMC (the epoch's summary)."""

    def __init__(self) -> None:
        self.checksum_errors = 0
        self.malformed = 0
        self._satellites: int | None = None
        self._hdop: float | None = None
        self._mode = 0
        self._quality = 0

    def feed(self, line: str) -> Fix | None:
        line = line.strip()
        if not line.startswith("$") or len(line) > MAX_LINE:
            return None  # binary protocols and comments share logs with NMEA
        try:
            message = pynmea2.parse(line, check=True)
        except pynmea2.ChecksumError:
            self.checksum_errors += 1
            return None
        except (pynmea2.ParseError, ValueError, TypeError, AttributeError):
            self.malformed += 1
            return None
        try:
            return self._update(message)
        except (ValueError, TypeError, AttributeError):
            self.malformed += 1
            return None

    def _update(self, message: typing.Any) -> Fix | None:
        kind = message.sentence_type
        if kind == "GGA":
            # Parse every field first: a sentence rejected halfway must change nothing.
            quality = int(message.gps_qual or 0)
            satellites = int(message.num_sats) if message.num_sats else None
            hdop = float(message.horizontal_dil) if message.horizontal_dil else None
            if satellites is not None and not 0 <= satellites <= 255:
                raise ValueError(f"{satellites} satellites")
            if hdop is not None and not (math.isfinite(hdop) and 0 < hdop <= MAX_HDOP):
                raise ValueError(f"HDOP {hdop}")
            self._quality, self._satellites, self._hdop = quality, satellites, hdop
        elif kind == "GSA":
            self._mode = int(message.mode_fix_type or 0)
        elif kind == "RMC" and message.status == "A" and message.lat and message.lon:
            stamp = None
            if message.datestamp and message.timestamp:
                moment = datetime.datetime.combine(
                    message.datestamp,
                    message.timestamp.replace(tzinfo=None),
                    tzinfo=datetime.UTC,
                )
                stamp = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            mode = self._mode if self._mode >= 2 else 2
            accuracy = round(self._hdop * UERE_M, 1) if self._hdop else None
            lat, lon = float(message.latitude), float(message.longitude)
            if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90):
                raise ValueError(f"position {lat}, {lon} is not on Earth")
            if not -180 <= lon <= 180:
                raise ValueError(f"position {lat}, {lon} is not on Earth")
            return Fix(
                lat=round(lat, 9),
                lon=round(lon, 9),
                accuracy_m=accuracy,
                mode=mode,
                satellites=self._satellites,
                time=stamp,
            )
        return None


MAX_HDOP = 99.99  # NMEA's own ceiling; beyond it the receiver reports garbage


def tpv_fix(report: dict[str, typing.Any], satellites: int | None) -> Fix | None:
    """A gpsd TPV report with a 2D/3D fix, as a Fix."""
    if report.get("class") != "TPV" or int(report.get("mode", 0)) < 2:
        return None
    lat, lon = report.get("lat"), report.get("lon")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return None
    accuracy = report.get("eph")
    if accuracy is None and "epx" in report and "epy" in report:
        accuracy = max(report["epx"], report["epy"])
    return Fix(
        float(lat), float(lon), accuracy, int(report["mode"]), satellites, report.get("time")
    )


class GpsdSource:
    """`gpsd://HOST:PORT`: the TPV reports of a running gpsd."""

    name = "gps"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.problem: str | None = None

    async def run(self, emit: sighting.Emit) -> None:
        delay = 1.0
        while True:
            try:
                await self._session(emit)
                self.problem = "gpsd closed the connection"
            except OSError as exc:
                self.problem = f"gpsd at {self.host}:{self.port}: {exc.strerror or exc}"
            log.warning("%s; retrying in %.0fs", self.problem, delay)
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)

    async def _session(self, emit: sighting.Emit) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 16)
        try:
            writer.write(b'?WATCH={"enable":true,"json":true};\n')
            await writer.drain()
            self.problem = None
            satellites: int | None = None
            while line := await reader.readline():
                try:
                    report = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(report, dict):
                    continue
                if report.get("class") == "SKY" and isinstance(report.get("uSat"), int):
                    satellites = report["uSat"]
                fix = tpv_fix(report, satellites)
                if fix is not None:
                    emit(fix.sighting(time.monotonic()))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class SerialSource:
    """`serial:DEVICE?baud=N`: NMEA straight from the receiver through pyserial."""

    name = "gps"

    def __init__(self, device: str, baud: int) -> None:
        self.device = device
        self.baud = baud
        self.parser = NmeaFixes()
        self.problem: str | None = None

    async def run(self, emit: sighting.Emit) -> None:
        import serial  # pyserial, only when a serial receiver is configured

        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def read() -> None:
            with serial.Serial(self.device, self.baud, timeout=0.5) as port:
                while not stop.is_set():
                    raw = port.readline(MAX_LINE)
                    if raw:
                        line = raw.decode("ascii", errors="replace")
                        loop.call_soon_threadsafe(self._line, line, emit)

        try:
            await asyncio.to_thread(read)
        except (OSError, serial.SerialException) as exc:
            self.problem = f"{self.device}: {exc}"
            raise sighting.SensorProblem(self.problem) from exc
        finally:
            stop.set()

    def _line(self, line: str, emit: sighting.Emit) -> None:
        fix = self.parser.feed(line)
        if fix is not None:
            emit(fix.sighting(time.monotonic()))


class ReplaySource:
    """`replay:PATH[?speed=N]`: a recorded NMEA log (gpsd's regression format: `#` comments,
    then sentences), paced by the receiver's own clock, played once."""

    name = "gps"

    def __init__(self, path: pathlib.Path, speed: float = 1.0) -> None:
        self.path = path
        self.speed = speed
        self.parser = NmeaFixes()

    async def run(self, emit: sighting.Emit) -> None:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise sighting.SensorProblem(f"{self.path}: {exc.strerror}") from exc
        previous: datetime.datetime | None = None
        for raw in data.splitlines():
            fix = self.parser.feed(raw.decode("ascii", errors="replace"))
            if fix is None:
                continue
            if fix.time is not None:
                moment = datetime.datetime.fromisoformat(fix.time.replace("Z", "+00:00"))
                if previous is not None and moment > previous:
                    await asyncio.sleep(min(5.0, (moment - previous).total_seconds()) / self.speed)
                previous = moment
            emit(fix.sighting(time.monotonic()))
