"""PIN flood: a genuine PIN check-in's latency while one client floods wrong-PIN check-outs.

Issue 13, F3. Central runs as its own process on a fresh store with one enrolled room whose
session takes check-outs (so every flood request reaches the PIN). One client address keeps
`--flood` wrong-PIN check-outs in flight, each for another unknown student id (the worst case
for per-student limits); meanwhile other addresses make genuine first-time PIN check-ins one
after another. Printed: the genuine check-ins' latency without and with the flood, and what the
flood was answered. `--set KEY=VALUE` passes central settings (e.g. to switch a limit off and
see the Argon2 pool alone). Figures only, no targets.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
import pathlib
import sys
import tempfile
import typing
import zoneinfo

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks import burst
from benchmarks import campus
from benchmarks import common
from benchmarks import httpload
from central.domain import timetable
from central.storage import store
from edge_agent.protocol import slots

PIN = "246810"
FLOOD_ADDRESS = "10.66.0.1"


async def provision(data_dir: pathlib.Path, device: campus.Device, students: int) -> None:
    """The room, its enrolled device with a proof, students with a PIN, and a session
    running now that takes check-outs."""
    async with campus.Store(data_dir) as bench:
        await bench.add_devices([device])
        await bench.first_proofs([device])
        await bench.add_pin_students(1, students, PIN)
        utc = datetime.datetime.now(datetime.UTC)
        shift = max(-12, min(14, 12 - utc.hour))  # local noon: no day boundary crossed
        zone = f"Etc/GMT{-shift:+d}" if shift else "UTC"
        local = utc.astimezone(zoneinfo.ZoneInfo(zone))
        await bench.db.add_course(store.Course(campus.SITE, "venue", "Venue", zone))
        await bench.db.add_session(
            timetable.Session(
                id=0,
                site=campus.SITE,
                course="venue",
                room=device.room,
                timezone=zone,
                first_date=local.date(),
                start=(local - datetime.timedelta(minutes=2)).time().replace(second=0),
                end=(local + datetime.timedelta(minutes=90)).time().replace(second=0),
                weekly=False,
                until=None,
                grace_min=10,
                checkout=True,
            )
        )


def request(
    central: campus.Central,
    device: campus.Device,
    path: str,
    student_id: str,
    pin: str,
    address: str,
) -> typing.Callable[[], bytes]:
    def build() -> bytes:
        token = device.url(central.url, slots.slot_of(campus.now_ms(), campus.SLOT_S))
        body = json.dumps({"token": token, "student_id": student_id, "pin": pin}).encode()
        headers = {"X-Forwarded-For": address}
        return httpload.post("127.0.0.1", central.port, path, body, headers)

    return build


async def genuine(
    central: campus.Central, device: campus.Device, first: int, count: int
) -> list[httpload.Result]:
    """`count` students check in by PIN one after another, each from their own address."""
    builders = [
        request(
            central,
            device,
            "/api/v1/checkins",
            f"p{n:04d}",
            PIN,
            burst.phone_address(f"p{n:04d}"),
        )
        for n in range(first, first + count)
    ]
    return await httpload.closed_loop("127.0.0.1", central.port, iter(builders), 1)


async def under_flood(
    central: campus.Central, device: campus.Device, flood: int, first: int, count: int
) -> tuple[list[httpload.Result], list[httpload.Result]]:
    stop = False

    def wrong_pins() -> typing.Iterator[typing.Callable[[], bytes]]:
        number = 0
        while not stop:
            number += 1
            yield request(
                central, device, "/api/v1/checkouts", f"x{number:06d}", "000000", FLOOD_ADDRESS
            )

    flooding = asyncio.create_task(
        httpload.closed_loop("127.0.0.1", central.port, wrong_pins(), flood)
    )
    await asyncio.sleep(1.0)  # the flood is under way
    measured = await genuine(central, device, first, count)
    stop = True
    return measured, await flooding


def run() -> int:
    parser = common.parser(__doc__.split("\n")[0])
    parser.add_argument("--flood", type=int, default=24, help="wrong-PIN requests in flight (24)")
    parser.add_argument("--genuine", type=int, help="genuine check-ins measured (10, quick 4)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a central setting"
    )
    args = parser.parse_args()
    count = common.sized(args.genuine, 10, 4, args.quick)
    if min(count, args.flood) < 1:
        raise common.BenchmarkError("--flood and --genuine must be >= 1")
    extra: dict[str, typing.Any] = {"offline_grace_s": 3600, "trusted_proxies": ["127.0.0.1/32"]}
    for item in args.set:
        key, _, value = item.partition("=")
        extra[key] = (
            json.loads(value) if value[:1].isdigit() or value in ("true", "false") else value
        )

    with tempfile.TemporaryDirectory(prefix="roomproof-bench-pinflood-") as tmp:
        workdir = pathlib.Path(tmp)
        broker = campus.start_broker(workdir / "mosquitto")
        try:
            (device,) = campus.make_devices(1)
            central = campus.Central(workdir / "central", broker.url, extra=extra)
            asyncio.run(provision(central.data_dir, device, 2 * count))
            central.start()
            common.progress(f"{count} genuine PIN check-ins, no flood")
            quiet = asyncio.run(genuine(central, device, 0, count))
            common.progress(f"{count} genuine PIN check-ins during a {args.flood}-way flood")
            flooded, flood = asyncio.run(under_flood(central, device, args.flood, count, count))
            central.stop()
        finally:
            common.CHILDREN.stop_all()

    def latencies(results: list[httpload.Result]) -> list[float]:
        failed = [r for r in results if r.status != 201]
        if failed:
            raise common.BenchmarkError(f"genuine check-ins failed: {failed[:3]}")
        return [r.latency_ms for r in results]

    quiet_ms, flooded_ms = latencies(quiet), latencies(flooded)
    answers = collections.Counter(f"{r.status} {r.error}".strip() for r in flood)
    flood_ms = [r.latency_ms for r in flood]
    settings = ", ".join(args.set) or "defaults"
    figures = [
        common.Figure(
            "genuine_pin_checkin_p50",
            common.percentile(flooded_ms, 50),
            "ms",
            common.percentile(quiet_ms, 50),
            note=f"during the flood; baseline: no flood ({settings})",
        ),
        common.Figure(
            "genuine_pin_checkin_max",
            max(flooded_ms),
            "ms",
            max(quiet_ms),
            note="during the flood; baseline: no flood",
        ),
        common.Figure(
            "flood_requests",
            float(len(flood)),
            "requests",
            note=", ".join(f"{k}: {v}" for k, v in sorted(answers.items())),
        ),
        common.Figure("flood_latency_p50", common.percentile(flood_ms, 50), "ms"),
    ]
    common.report(figures, "pin flood", args.json)
    return 0


if __name__ == "__main__":
    common.main(run)
