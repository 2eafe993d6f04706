"""GPS on recorded receiver logs: pynmea2 on the raw log, a real gpsd (gpsfake), and pyserial
reading a real pseudo-terminal; all must agree with gpsd's own expected output (.chk)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import time

import pytest

from edge_agent.sensors import gps
from edge_agent.sensors import sighting
from tests import broker as broker_mod

LOGS = ["bu353s4", "mt3339", "neo-m8n", "quectel-L70", "nmea-fuzzy-cases"]


def reference(log: pathlib.Path) -> set[tuple[float, float]]:
    """Every position gpsd itself reported for this log."""
    positions = set()
    for line in pathlib.Path(f"{log}.chk").read_text().splitlines():
        if line.startswith("{"):
            report = json.loads(line)
            if report.get("class") == "TPV" and "lat" in report and report.get("mode", 0) >= 2:
                positions.add((round(report["lat"], 6), round(report["lon"], 6)))
    return positions


def assert_agrees(fixes: list[dict], log: pathlib.Path) -> None:
    """Every fix is one gpsd reported; gpsd's .chk stops before a log's final epoch."""
    expected = reference(log)
    assert len(fixes) >= 3, f"too few fixes from {log.name}: {len(fixes)}"
    for fix in fixes[:-1]:
        assert (round(fix["lat"], 6), round(fix["lon"], 6)) in expected, (log.name, fix)
        assert fix["mode"] in (2, 3)


@pytest.mark.parametrize("name", LOGS)
def test_nmea_parser_agrees_with_gpsd(shared_data: pathlib.Path, name: str) -> None:
    log = shared_data / "gps" / "gpsd-regress" / f"{name}.log"
    parser = gps.NmeaFixes()
    lines = log.read_bytes().decode("ascii", errors="replace").splitlines()
    fixes = [fix for line in lines if (fix := parser.feed(line)) is not None]
    assert_agrees([f.sighting(0).fields for f in fixes], log)
    times = [f.time for f in fixes if f.time]
    assert times == sorted(times) or name == "nmea-fuzzy-cases"


def test_checksum_errors_are_counted() -> None:
    parser = gps.NmeaFixes()
    good = "$GPRMC,030719.000,A,3747.0873,S,17518.8938,E,0.69,181.39,311214,,,A*7D"
    assert parser.feed(good) is not None
    assert parser.feed(good.replace("3747.0873", "3747.0874")) is None
    assert parser.feed("$GPRMC,garbage*00") is None
    assert parser.feed("\x00\xff binary") is None
    assert parser.checksum_errors == 2


@pytest.mark.parametrize("name", ["bu353s4", "mt3339", "quectel-L70"])
async def test_real_gpsd_through_gpsfake(shared_data: pathlib.Path, name: str) -> None:
    gpsfake = shutil.which("gpsfake")
    if gpsfake is None:
        pytest.fail("gpsfake is missing: run .ci/setup (Debian package gpsd-clients)")
    log = shared_data / "gps" / "gpsd-regress" / f"{name}.log"
    port = broker_mod.free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, before the loop work
        [gpsfake, "-1", "-q", "-P", str(port), "-c", "0.05", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    seen: list[sighting.Sighting] = []
    source = gps.GpsdSource("127.0.0.1", port)
    task = asyncio.create_task(source.run(seen.append))
    try:
        deadline = time.monotonic() + 30
        last_count, quiet_since = 0, time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if len(seen) != last_count:
                last_count, quiet_since = len(seen), time.monotonic()
            elif seen and time.monotonic() - quiet_since > 2:
                break
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        os.killpg(process.pid, 9)
        process.wait()
    assert_agrees([s.fields for s in seen], log)
    assert any(s.fields["accuracy_m"] for s in seen)


async def test_serial_reader_on_a_pty(shared_data: pathlib.Path) -> None:
    log = shared_data / "gps" / "gpsd-regress" / "mt3339.log"
    master, slave = os.openpty()
    source = gps.SerialSource(os.ttyname(slave), 9600)
    seen: list[sighting.Sighting] = []
    task = asyncio.create_task(source.run(seen.append))
    try:
        await asyncio.sleep(0.3)
        for line in log.read_bytes().splitlines():
            if line.startswith(b"$"):
                os.write(master, line + b"\r\n")
                await asyncio.sleep(0.002)
        corrupt = b"$GPRMC,030719.000,A,3747.0873,S,17518.8938,E,0.69,181.39,311214,,,A*7E"
        os.write(master, corrupt + b"\r\n")
        async with asyncio.timeout(10):
            while source.parser.checksum_errors == 0:  # noqa: ASYNC110 - a counter, no event
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        os.close(master)
        os.close(slave)
    assert_agrees([s.fields for s in seen], log)
    assert len(seen) == 30 and source.parser.checksum_errors == 1


async def test_replay_source_paces_and_ends(shared_data: pathlib.Path) -> None:
    log = shared_data / "gps" / "gpsd-regress" / "bu353s4.log"
    seen: list[sighting.Sighting] = []
    started = time.monotonic()
    await gps.ReplaySource(log, speed=50).run(seen.append)
    assert len(seen) == 25
    assert seen[-1].at - seen[0].at > 0.2  # paced by the receiver's 1 s epochs / 50
    assert time.monotonic() - started < 30
    assert_agrees([s.fields for s in seen], log)
