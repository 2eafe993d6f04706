"""`python -m edge_agent sensors`: what each sensor sees, live, for installers and scripts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import typing

from edge_agent import settings as settings_mod
from edge_agent.sensors import manager
from edge_agent.sensors import sighting
from edge_agent.sensors import window

CLEAR = "\x1b[H\x1b[2J"


async def run(settings: settings_mod.AgentSettings, duration: float | None, as_json: bool) -> int:
    out = sys.stdout
    seen = window.Window(max(settings.observation_window_s, 10.0), strongest=64)

    closed = False

    def write(text: str) -> None:
        nonlocal closed
        if closed:
            return
        try:
            out.write(text)
            out.flush()
        except BrokenPipeError:  # `... | head` has read all it wanted
            closed = True

    def emit(found: sighting.Sighting) -> None:
        seen.add(found)
        if as_json:
            write(json.dumps(found.fields) + "\n")

    sensors = manager.Sensors(settings, emit)
    if not sensors.specs:
        print(
            "error: no sensor is enabled (set wifi_source, ble_source or gps_source)",
            file=sys.stderr,
        )
        return 2
    task = asyncio.create_task(sensors.run())
    reported: dict[str, str] = {}
    started = time.monotonic()
    try:
        while not closed and (duration is None or time.monotonic() - started < duration):
            await asyncio.sleep(0.25 if as_json else 1.0)
            for sensor, problem in sensors.problems.items():
                if reported.get(sensor) != problem and as_json:
                    write(json.dumps({"sensor": sensor, "error": problem}) + "\n")
                reported[sensor] = problem
            if not as_json:
                write((CLEAR if out.isatty() else "\n") + table(seen, sensors))
            if task.done() or set(sensors.ended) == set(sensors.specs):
                break
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return 0


def table(seen: window.Window, sensors: manager.Sensors) -> str:
    lines = [f"roomproof site survey: last {seen.window_s:.0f} s"]
    for sensor, spec in sensors.specs.items():
        state = sensors.problems.get(sensor) or (
            "replay ended" if sensor in sensors.ended else "ok"
        )
        lines.append(f"\n{sensor.upper()} ({spec.kind}:{spec.target}) - {state}")
        if sensor == "wifi":
            lines.append(f"  {'BSSID':17}  {'RSSI':>5}  {'CH':>3}  {'SEEN':>4}  SSID")
            lines += [
                _row(ap, ("bssid", "rssi", "channel", "seen", "ssid"))
                for ap in seen.aggregate("wifi")
            ]
        elif sensor == "ble":
            lines.append(f"  {'KIND':17}  {'RSSI':>5}  {'TX':>3}  {'SEEN':>4}  ID")
            lines += [
                _row(b, ("kind", "rssi", "tx_power", "seen", "id")) for b in seen.aggregate("ble")
            ]
        else:
            fix = seen.gps()
            lines.append(
                "  no fix"
                if fix is None
                else f"  {fix['lat']:.6f}, {fix['lon']:.6f}  ±{fix['accuracy_m'] or '?'} m  "
                f"{fix['fix']}  {fix['satellites']} satellites"
            )
    return "\n".join(lines) + "\n"


def _row(row: dict[str, typing.Any], keys: tuple[str, ...]) -> str:
    first, rssi, third, count, last = (row.get(k) for k in keys)
    return f"  {first!s:17}  {rssi!s:>5}  {third!s:>3}  {count!s:>4}  {last}"
