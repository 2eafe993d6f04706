"""One thing a sensor saw at one moment; the observation window aggregates these."""

from __future__ import annotations

import dataclasses
import typing


@dataclasses.dataclass(frozen=True)
class Sighting:
    sensor: str  # "wifi", "ble" or "gps"
    key: str  # what is aggregated on: a BSSID, a beacon identity, "fix"
    rssi: int | None
    fields: dict[str, typing.Any]  # the observation as `edge_agent sensors --json` prints it
    at: float  # time.monotonic() when seen


Emit = typing.Callable[[Sighting], None]


class SensorProblem(Exception):
    """A sensor cannot work (no interface, no adapter, bad file); the message says why."""
