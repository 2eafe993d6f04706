"""Scan to visible: from a student's check-in POST to its `checkin` event on the admin's live
stream (SSE), vs a bare aiohttp app relaying each POST to an SSE subscriber.

Check-ins are offered open-loop at a steady rate (each POST leaves at its planned time,
whatever the answers before it), returning students with a QR token of the current slot.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys
import tempfile
import time
import typing

import aiohttp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks import campus
from benchmarks import common
from edge_agent.protocol import slots
from tests import broker as broker_mod

ROOMS = 10


async def provision(
    data_dir: pathlib.Path, devices: list[campus.Device], per_room: int
) -> tuple[list[campus.Student], str]:
    async with campus.Store(data_dir) as bench:
        await bench.add_devices(devices)
        await bench.first_proofs(devices)
        returning = await bench.add_credentials(len(devices), per_room)
        rosters: dict[int, list[str]] = {}
        for student in returning:
            rosters.setdefault(student.room_index, []).append(student.student_id)
        await bench.add_sessions(devices, rosters)
        return returning, await bench.admin_token()


async def offer(
    base: str,
    token: str | None,
    devices: list[campus.Device],
    chosen: list[campus.Student],
    rate: float,
    key: str,
) -> tuple[list[float], int]:
    """POST each check-in at its planned time; (latencies to the SSE event in ms, failures).

    `key` names the event field that identifies the request: central's `student_id`, the
    bare relay's `request_id` (the X-Request-Id header, set to the student id for both)."""
    stream = campus.EventStream(base, token or "none")
    sent: dict[str, float] = {}
    failures = 0
    async with stream, aiohttp.ClientSession() as http:

        async def post(student: campus.Student) -> None:
            nonlocal failures
            slot = slots.slot_of(campus.now_ms(), campus.SLOT_S)
            body = {"token": devices[student.room_index].url(base, slot)}
            cookies = {campus.COOKIE: student.credential, campus.BROWSER_COOKIE: student.browser}
            headers = {
                "X-Request-Id": student.student_id,
                "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
            }
            sent[student.student_id] = time.time()
            async with http.post(base + "/api/v1/checkins", json=body, headers=headers) as answer:
                await answer.read()
                if answer.status != 201:
                    failures += 1

        started = time.monotonic()
        tasks = []
        for index, student in enumerate(chosen):
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            tasks.append(asyncio.create_task(post(student)))
        await asyncio.gather(*tasks)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sum(1 for e in stream.events if e[1] == "checkin") >= len(chosen) - failures:
                break
            await asyncio.sleep(0.05)
    latencies = [
        (at - sent[data[key]]) * 1000
        for at, kind, data in stream.events
        if kind == "checkin" and data.get(key) in sent
    ]
    return latencies, failures


def run() -> int:
    parser = common.parser(__doc__.split("\n")[0])
    parser.add_argument("--checkins", type=int, help="check-ins offered (1500, quick 300)")
    parser.add_argument("--rate", type=float, default=50, help="check-ins per second (50)")
    args = parser.parse_args()
    count = common.sized(args.checkins, 1500, 300, args.quick)
    if count < 1 or args.rate <= 0:
        raise common.BenchmarkError("checkins and rate must be positive")
    per_room = -(-count // ROOMS)

    with tempfile.TemporaryDirectory(prefix="roomproof-bench-s2v-") as tmp:
        workdir = pathlib.Path(tmp)
        broker = campus.start_broker(workdir / "mosquitto")
        try:
            central_lat, central_fail, bare_lat = measure(workdir, broker, count, per_room, args)
        finally:
            common.CHILDREN.stop_all()

    if not central_lat or not bare_lat:
        raise common.BenchmarkError("no check-in event arrived on a stream")
    figures = [
        common.Figure(
            "scan_to_visible_p50",
            common.percentile(central_lat, 50),
            "ms",
            common.percentile(bare_lat, 50),
            note=f"{len(central_lat)} check-ins at {args.rate:g}/s; baseline: bare aiohttp"
            " POST -> SSE relay",
        ),
        common.Figure(
            "scan_to_visible_p99",
            common.percentile(central_lat, 99),
            "ms",
            common.percentile(bare_lat, 99),
            common.Target("<", 500),
        ),
        common.Figure("scan_to_visible_failed", float(central_fail), "requests"),
    ]
    common.report(figures, "scan to visible", args.json)
    return 0


def measure(
    workdir: pathlib.Path,
    broker: broker_mod.Broker,
    count: int,
    per_room: int,
    args: typing.Any,
) -> tuple[list[float], int, list[float]]:
    devices = campus.make_devices(ROOMS)
    central = campus.Central(workdir / "central", broker.url, extra={"offline_grace_s": 3600})
    common.progress(f"provisioning {ROOMS} rooms, {ROOMS * per_room} returning students")
    returning, token = asyncio.run(provision(central.data_dir, devices, per_room))
    central.start()
    common.progress(f"central: {count} check-ins at {args.rate:g}/s")
    central_lat, failures = asyncio.run(
        offer(central.url, token, devices, returning[:count], args.rate, "student_id")
    )
    central.stop()
    if failures:
        common.progress(f"central: {failures} check-ins failed; see {central.log}")

    port = broker_mod.free_port()
    process = common.CHILDREN.start(
        common.python("benchmarks/bare_http.py", "--port", str(port)), log=workdir / "bare.log"
    )
    common.wait_until(
        lambda: common.http_json(f"http://127.0.0.1:{port}/healthz"), 30, "the bare aiohttp app"
    )
    common.progress(f"bare relay: {count} POSTs at {args.rate:g}/s")
    bare_lat, _ = asyncio.run(
        offer(f"http://127.0.0.1:{port}", None, devices, returning[:count], args.rate, "request_id")
    )
    common.CHILDREN.stop(process)
    return central_lat, failures, bare_lat


if __name__ == "__main__":
    common.main(run)
