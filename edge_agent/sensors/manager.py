"""Runs the configured sensors side by side; a sensor that fails is retried with backoff and
reported, never allowed to stop the agent."""

from __future__ import annotations

import asyncio
import logging
import typing

from edge_agent.sensors import sighting
from edge_agent.sensors import sources

log = logging.getLogger(__name__)


class Sensors:
    def __init__(self, settings: typing.Any, emit: sighting.Emit) -> None:
        self.settings = settings
        self.emit = emit
        self.specs = {
            sensor: spec
            for sensor in ("wifi", "ble", "gps")
            if (spec := sources.parse(sensor, getattr(settings, f"{sensor}_source"))) is not None
        }
        self._problems: dict[str, str] = {}
        self._running: dict[str, typing.Any] = {}
        self.ended: set[str] = set()

    @property
    def problems(self) -> dict[str, str]:
        """Each failing sensor's reason: its last failure, or what a running source reports
        about itself (e.g. a BLE scanner the watchdog cannot start)."""
        found = dict(self._problems)
        for sensor, source in self._running.items():
            status = getattr(source, "status", None)
            reported = status() if status is not None else None
            if reported:
                found[sensor] = reported
        return found

    def state(self) -> dict[str, dict[str, str]]:
        """Per enabled sensor: which source and mode (e.g. WiFi `monitor` or `iw`) and status."""
        problems = self.problems
        return {
            sensor: {
                "source": f"{spec.kind}:{spec.target}" if spec.target else spec.kind,
                "mode": spec.kind,
                "status": problems.get(sensor)
                or ("replay ended" if sensor in self.ended else "ok"),
            }
            for sensor, spec in self.specs.items()
        }

    def missing(self) -> dict[str, str]:
        """Why each enabled sensor may have nothing to say (for the proof's env.missing)."""
        reasons = {sensor: "nothing seen" for sensor in self.specs}
        for sensor in self.ended:
            reasons[sensor] = "replay ended"
        reasons.update(self.problems)
        return reasons

    async def run(self) -> None:
        """Runs until cancelled, also after every replay has ended (the agent goes on)."""
        await asyncio.gather(*(self._keep(sensor, spec) for sensor, spec in self.specs.items()))
        await asyncio.Event().wait()

    async def _keep(self, sensor: str, spec: sources.Spec) -> None:
        delay = 1.0
        while True:
            source = sources.build(spec, self.settings)
            self._running[sensor] = source
            try:
                await source.run(self.emit)
            except sighting.SensorProblem as exc:
                self._problem(sensor, str(exc))
            except ImportError as exc:
                self._problem(sensor, f"library missing: {exc.name}")
            except Exception as exc:
                log.exception("%s sensor failed", sensor)
                self._problem(sensor, f"failed: {type(exc).__name__}: {exc}")
            else:
                if spec.kind in ("pcap", "replay"):
                    self.ended.add(sensor)
                    self._problems.pop(sensor, None)
                    log.info("%s replay ended", sensor)
                    return
                self._problem(sensor, "stopped")
            finally:
                self._running.pop(sensor, None)
            await asyncio.sleep(delay)
            delay = min(60.0, delay * 2)

    def _problem(self, sensor: str, message: str) -> None:
        if self._problems.get(sensor) != message:
            log.warning("%s sensor: %s", sensor, message)
        self._problems[sensor] = message
