"""The observation window: what the sensors saw during the last `window_s` seconds, aggregated
per access point and beacon (times seen, median RSSI), strongest first, as a proof's `env`."""

from __future__ import annotations

import collections
import datetime
import logging
import statistics
import time
import typing

import pydantic

from edge_agent.protocol import proof
from edge_agent.sensors import sighting

GPS_FIX = {2: "2d", 3: "3d"}


log = logging.getLogger(__name__)


class Window:
    def __init__(
        self,
        window_s: float,
        strongest: int = 16,
        clock: typing.Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.strongest = strongest
        self._clock = clock
        self._sightings: collections.deque[sighting.Sighting] = collections.deque()
        self.last_gps: sighting.Sighting | None = None
        self.unfit = 0  # items dropped because the proof schema refuses them
        self._unfit_logged: set[str] = set()

    def add(self, seen: sighting.Sighting) -> None:
        self._sightings.append(seen)
        if seen.sensor == "gps":
            self.last_gps = seen
        self._prune(self._clock())

    def _prune(self, now: float) -> None:
        while self._sightings and self._sightings[0].at < now - self.window_s:
            self._sightings.popleft()
        if len(self._sightings) > 100_000:  # a flood of sightings cannot exhaust memory
            self._sightings.popleft()

    def aggregate(self, sensor: str) -> list[dict[str, typing.Any]]:
        groups: dict[str, list[sighting.Sighting]] = collections.defaultdict(list)
        cutoff = self._clock() - self.window_s
        for seen in self._sightings:
            if seen.sensor == sensor and seen.at >= cutoff:
                groups[seen.key].append(seen)
        rows = []
        for items in groups.values():
            rssis = [s.rssi for s in items if s.rssi is not None]
            last = items[-1].fields
            median = round(statistics.median(rssis)) if rssis else -127
            if sensor == "wifi":
                row = {
                    "bssid": last["bssid"],
                    "ssid": last["ssid"][:128],
                    "rssi": max(-127, min(20, median)),
                    "channel": last["channel"],
                    "seen": len(items),
                }
            else:
                row = {
                    "kind": last["kind"][:64],
                    "id": last["id"][:256],
                    "rssi": max(-127, min(20, median)),
                    "tx_power": last["tx_power"],
                    "seen": len(items),
                }
            rows.append(row)
        rows.sort(key=lambda row: row["rssi"], reverse=True)
        return rows[: self.strongest]

    def gps(self) -> dict[str, typing.Any] | None:
        fix = self.last_gps
        if fix is None or fix.at < self._clock() - self.window_s:
            return None
        fields = fix.fields
        stamp = fields.get("time")
        unix_ms = None
        if stamp:
            moment = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            unix_ms = int(moment.timestamp() * 1000)
        accuracy = fields.get("accuracy_m")
        return {
            "lat": fields["lat"],
            "lon": fields["lon"],
            "accuracy_m": float(accuracy) if accuracy is not None else None,
            "fix": GPS_FIX.get(fields.get("mode", 0), "none"),
            "satellites": min(255, fields.get("satellites") or 0),
            "time": unix_ms,
        }

    def _fitting(
        self, items: list[dict[str, typing.Any]], model: type[pydantic.BaseModel]
    ) -> list[dict[str, typing.Any]]:
        """Only what the proof schema accepts: a hostile radio or receiver must not make the
        device's proofs invalid. Each dropped item is counted and logged once per kind."""
        kept = []
        for item in items:
            try:
                model.model_validate(item)
            except pydantic.ValidationError as exc:
                self.unfit += 1
                if model.__name__ not in self._unfit_logged:
                    self._unfit_logged.add(model.__name__)
                    log.warning(
                        "dropped a %s that the proof schema refuses: %s",
                        model.__name__,
                        exc.errors()[0]["msg"],
                    )
                continue
            kept.append(item)
        return kept

    def env(self, missing: dict[str, str]) -> dict[str, typing.Any]:
        """The `env` claim of the next proof (docs/protocol.md)."""
        self._prune(self._clock())
        env: dict[str, typing.Any] = {
            "wifi": self._fitting(self.aggregate("wifi"), proof.WifiAP),
            "ble": self._fitting(self.aggregate("ble"), proof.BleBeacon),
            "window_s": round(self.window_s),
        }
        position = self.gps()
        if position is not None and not self._fitting([position], proof.Gps):
            position = None
        if position is not None:
            env["gps"] = position
        absent = {
            sensor: reason[:64]
            for sensor, reason in missing.items()
            if not (env.get(sensor) if sensor != "gps" else position)
        }
        if absent:
            env["missing"] = absent
        return env
