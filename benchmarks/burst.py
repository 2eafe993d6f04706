"""Check-in burst: 500-student rooms scanning at once, on the hour, vs a bare aiohttp handler.

Every room has an enrolled device with a stored proof (so central knows its slot and clock),
a course session running now with its 500 students on the roster, and every student a
remembered-browser credential: the returning-student path, QR token + credential, that a
lecture hall takes within one slot. Tokens are signed by the load generator with the device
keys for the slot current when each request is sent. The first-time PIN path (Argon2id) is
measured apart on a small sample.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import pathlib
import sys
import tempfile
import time
import typing

import argon2

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks import campus
from benchmarks import common
from benchmarks import httpload
from central.checkin import students as students_mod
from edge_agent.protocol import slots
from tests import broker as broker_mod

PIN = "4711"
PIN_CONCURRENCY = 4
BARE_MIN_REQUESTS = 20_000


@dataclasses.dataclass(frozen=True)
class Outcome:
    rate: float  # answered requests per second (all statuses)
    ok_rate: float  # 201s per second
    latencies: list[float]
    errors: dict[str, int]
    count: int
    cpu_us: float = float("nan")  # the server's CPU (all its threads) per answered request


def outcome(results: list[httpload.Result], wall_s: float) -> Outcome:
    errors: dict[str, int] = {}
    for result in results:
        if result.error:
            errors[result.error] = errors.get(result.error, 0) + 1
    ok = sum(1 for r in results if not r.error)
    return Outcome(
        len(results) / wall_s,
        ok / wall_s,
        [r.latency_ms for r in results],
        errors,
        len(results),
    )


def phone_address(student_id: str) -> str:
    """A stable campus-WiFi address per student (10.0.0.0/8), as X-Forwarded-For reports it."""
    digest = hashlib.sha256(student_id.encode()).digest()
    return f"10.{digest[0]}.{digest[1]}.{digest[2]}"


class Requests:
    """Check-in requests built at send time: the QR token of the device's current slot."""

    def __init__(self, devices: list[campus.Device], public_url: str, port: int) -> None:
        self.devices = devices
        self.public_url = public_url
        self.port = port

    def token(self, room: int) -> str:
        slot = slots.slot_of(campus.now_ms(), campus.SLOT_S)  # offset 0: central's clock
        return self.devices[room].url(self.public_url, slot)

    def returning(self, student: campus.Student) -> typing.Callable[[], bytes]:
        cookie = f"{campus.COOKIE}={student.credential}; {campus.BROWSER_COOKIE}={student.browser}"
        headers = {"Cookie": cookie, "X-Forwarded-For": phone_address(student.student_id)}

        def build() -> bytes:
            body = json.dumps({"token": self.token(student.room_index)}).encode()
            return httpload.post("127.0.0.1", self.port, "/api/v1/checkins", body, headers)

        return build

    def first_time(self, student_id: str, room: int) -> typing.Callable[[], bytes]:
        def build() -> bytes:
            body = {"token": self.token(room), "student_id": student_id, "pin": PIN}
            return httpload.post(
                "127.0.0.1", self.port, "/api/v1/checkins", json.dumps(body).encode(), {}
            )

        return build


async def provision(
    data_dir: pathlib.Path, devices: list[campus.Device], per_room: int, pin_sample: int
) -> tuple[list[campus.Student], list[tuple[str, int]]]:
    async with campus.Store(data_dir) as bench:
        await bench.add_devices(devices)
        await bench.first_proofs(devices)
        common.progress(f"  {len(devices) * per_room} remembered-browser credentials")
        returning = await bench.add_credentials(len(devices), per_room)
        pin_students = await bench.add_pin_students(len(devices), pin_sample, PIN)
        rosters: dict[int, list[str]] = {}
        for student in returning:
            rosters.setdefault(student.room_index, []).append(student.student_id)
        for student_id, room in pin_students:
            rosters.setdefault(room, []).append(student_id)
        common.progress("  courses, rosters and sessions running now")
        await bench.add_sessions(devices, rosters)
    return returning, pin_students


async def drive(
    port: int, builders: list[typing.Callable[[], bytes]], concurrency: int, what: str
) -> Outcome:
    step = max(1, len(builders) // 5)

    def tick(done: int) -> None:
        if done % step == 0:
            common.progress(f"  {what}: {done}/{len(builders)}")

    started = time.perf_counter()
    results = await httpload.closed_loop(
        "127.0.0.1", port, iter(builders), concurrency, on_result=tick
    )
    return outcome(results, time.perf_counter() - started)


def argon2_verify_ms(samples: int = 5) -> float:
    """One Argon2id verify of a PIN hashed by central (its parameters), in this process."""
    encoded = students_mod.hash_pin(PIN)
    hasher = argon2.PasswordHasher()  # verify takes the cost parameters from the hash
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        hasher.verify(encoded, PIN)
        times.append((time.perf_counter() - started) * 1000)
    return common.percentile(times, 50)


def run() -> int:
    parser = common.parser(__doc__.split("\n")[0])
    parser.add_argument("--rooms", type=int, help="rooms of 500 students (200, quick 10)")
    parser.add_argument("--students", type=int, default=500, help="students per room (500)")
    parser.add_argument("--concurrency", type=int, default=100, help="concurrent clients (100)")
    parser.add_argument("--pin-sample", type=int, help="first-time PIN check-ins (40, quick 12)")
    parser.add_argument("--profile", type=pathlib.Path, help="cProfile central here")
    args = parser.parse_args()
    rooms = common.sized(args.rooms, 200, 10, args.quick)
    pin_sample = common.sized(args.pin_sample, 40, 12, args.quick)
    if min(rooms, args.students, args.concurrency, pin_sample) < 1:
        raise common.BenchmarkError("rooms, students, concurrency and pin-sample must be >= 1")

    with tempfile.TemporaryDirectory(prefix="roomproof-bench-burst-") as tmp:
        workdir = pathlib.Path(tmp)
        broker = campus.start_broker(workdir / "mosquitto")
        try:
            central, bare, pin = measure(args, workdir, broker, rooms, pin_sample)
        finally:
            common.CHILDREN.stop_all()

    total = rooms * args.students
    errors = sum(central.errors.values())
    if errors:
        common.progress(f"central errors: {central.errors}")
    figures = [
        common.Figure(
            "burst_rate",
            central.ok_rate,
            "checkins/s",
            bare.rate,
            common.Target(">=", 2000),
            f"{total} returning students, {rooms} rooms x {args.students},"
            f" {args.concurrency} keep-alive clients; baseline: bare aiohttp JSON handler",
        ),
        common.Figure(
            "burst_cpu_per_checkin",
            central.cpu_us,
            "us",
            bare.cpu_us,
            note="CPU time of all of central's threads per check-in during the burst;"
            " baseline: the bare app's CPU per request. With C cores free for the server,"
            " the rate ratio cannot exceed C x baseline / value",
        ),
        common.Figure(
            "burst_rate_vs_bare",
            central.ok_rate,
            "checkins/s",
            bare.rate,
            common.Target(">=", 0.5, "ratio"),
        ),
        common.Figure(
            "burst_latency_p50",
            common.percentile(central.latencies, 50),
            "ms",
            common.percentile(bare.latencies, 50),
        ),
        common.Figure(
            "burst_latency_p99",
            common.percentile(central.latencies, 99),
            "ms",
            common.percentile(bare.latencies, 99),
            common.Target("<", 100),
        ),
        common.Figure(
            "burst_latency_p99.9",
            common.percentile(central.latencies, 99.9),
            "ms",
            common.percentile(bare.latencies, 99.9),
        ),
        common.Figure(
            "burst_errors",
            float(errors),
            "requests",
            float(sum(bare.errors.values())),
            note=", ".join(f"{k}: {v}" for k, v in sorted(central.errors.items())) or "none",
        ),
        common.Figure(
            "pin_checkin_rate",
            pin.ok_rate,
            "checkins/s",
            note=f"first-time path (Argon2id), {pin_sample} students, {PIN_CONCURRENCY} clients",
        ),
        common.Figure(
            "pin_checkin_latency_p50",
            common.percentile(pin.latencies, 50),
            "ms",
            argon2_verify_ms(),
            note="baseline: one Argon2id verify with central's parameters, alone",
        ),
        common.Figure("pin_checkin_latency_p99", common.percentile(pin.latencies, 99), "ms"),
    ]
    common.report(figures, "burst", args.json)
    return 0


def served(pid: int, load: typing.Coroutine[typing.Any, typing.Any, Outcome]) -> Outcome:
    """Runs the load and adds the server's CPU time per request, read from /proc."""
    before = common.read_proc_stat(pid)[0]
    result = asyncio.run(load)
    used = common.read_proc_stat(pid)[0] - before
    return dataclasses.replace(result, cpu_us=used * 1e6 / max(1, result.count))


def measure(
    args: typing.Any,
    workdir: pathlib.Path,
    broker: broker_mod.Broker,
    rooms: int,
    pin_sample: int,
) -> tuple[Outcome, Outcome, Outcome]:
    devices = campus.make_devices(rooms)
    central = campus.Central(
        workdir / "central",
        broker.url,
        # The load generator stands for a campus reverse proxy in front of many phones: each
        # student's requests carry their own address, as a proxy reports it.
        extra={"offline_grace_s": 3600, "trusted_proxies": ["127.0.0.1/32"]},
        profile=args.profile,
    )
    common.progress(f"provisioning {rooms} rooms of {args.students} students")
    returning, pin_students = asyncio.run(
        provision(central.data_dir, devices, args.students, pin_sample)
    )
    central.start()
    requests = Requests(devices, central.url, central.port)
    burst = [requests.returning(s) for s in returning]
    common.progress(f"central: burst of {len(burst)} check-ins, {args.concurrency} clients")
    assert central.process is not None
    measured = served(central.process.pid, drive(central.port, burst, args.concurrency, "central"))
    common.progress(
        f"central: {measured.ok_rate:,.0f}/s, p99 {common.percentile(measured.latencies, 99):.0f}"
        f" ms; first-time PIN sample of {pin_sample}"
    )
    pins = [requests.first_time(student_id, room) for student_id, room in pin_students]
    pin = asyncio.run(drive(central.port, pins, PIN_CONCURRENCY, "PIN"))
    central.stop()
    if args.profile is not None and args.profile.exists():
        common.print_profile(args.profile)

    port = broker_mod.free_port()
    process = common.CHILDREN.start(
        common.python("benchmarks/bare_http.py", "--port", str(port)), log=workdir / "bare.log"
    )
    common.wait_until(
        lambda: common.http_json(f"http://127.0.0.1:{port}/healthz"), 30, "the bare aiohttp app"
    )
    bare_requests = Requests(devices, f"http://127.0.0.1:{port}", port)
    passes = max(1, -(-BARE_MIN_REQUESTS // len(returning)))  # long enough to time well
    bare_burst = [bare_requests.returning(s) for s in returning] * passes
    common.progress(f"bare aiohttp: the same requests, {passes} pass(es): {len(bare_burst)}")
    bare = served(process.pid, drive(port, bare_burst, args.concurrency, "bare"))
    common.CHILDREN.stop(process)
    common.progress(f"bare aiohttp: {bare.rate:,.0f}/s")
    return measured, bare, pin


if __name__ == "__main__":
    common.main(run)
