"""Ingest: central verifying and storing proofs vs a bare paho-mqtt subscriber, one broker.

Throughput is a backlog drain: N publisher processes fill the broker's queue for a persistent
session with real signed proofs of many enrolled devices (each device's proofs from one
publisher, in seq order), then the consumer connects and drains it alone, so the figure is
the consumer's rate and not the load generator's. Latency is then measured live at a steady
offered rate: publish -> `proof` event on central's SSE stream (bare: publish -> on_message).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import typing

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks import campus
from benchmarks import common
from edge_agent.protocol import topics
from tests import broker as broker_mod

SHARE_CENTRAL = "central"
SHARE_BARE = "bench"
REPEATS = 3
Message = tuple[str, str, float, str, int]  # topic, payload, send at, device, seq


@dataclasses.dataclass(frozen=True)
class Sizes:
    devices: int
    per_device: int  # backlog proofs per device
    publishers: int
    live_per_device: int  # proofs per device in the latency phase

    @property
    def total(self) -> int:
        return self.devices * self.per_device


def generate(
    devices: list[campus.Device], per_device: int, start_at: float, rate: float
) -> list[Message]:
    """Round-robin over devices (as a campus sends them), each device's chain in order.

    Paced messages (rate > 0) carry the iat of their planned send time, as a live device
    would; a backlog's iat advance by 1 ms per proof from now.
    """
    messages: list[Message] = []
    base = campus.now_ms()
    for k in range(per_device):
        for device in devices:
            index = len(messages)
            at = start_at + index / rate if rate > 0 else 0.0
            iat = int(at * 1000) if rate > 0 else base + k
            payload = device.next_proof(iat)
            messages.append((device.topic, payload, at, device.device, device.seq))
    return messages


def publish(
    workdir: pathlib.Path, port: int, messages: list[Message], publishers: int, tag: str
) -> list[tuple[str, int, float]]:
    """Split by device over `publishers` processes; returns (device, seq, sent at) each."""
    groups: list[list[Message]] = [[] for _ in range(publishers)]
    owner: dict[str, int] = {}
    for message in messages:
        group = owner.setdefault(message[3], len(owner) % publishers)
        groups[group].append(message)
    running = []
    for number, group in enumerate(groups):
        spec = workdir / f"{tag}-{number}.json"
        spec.write_text(json.dumps([[m[0], m[1], m[2]] for m in group]))
        out = workdir / f"{tag}-{number}.out.json"
        command = common.python(
            "benchmarks/mqtt_workers.py",
            "publish",
            "--port",
            str(port),
            "--client-id",
            f"pub-{tag}-{number}",
            "--spec",
            str(spec),
            "--out",
            str(out),
        )
        running.append((common.CHILDREN.start(command, log=workdir / "publishers.log"), out, group))
    sent: list[tuple[str, int, float]] = []
    for process, out, group in running:
        if process.wait(timeout=600) != 0:
            raise common.BenchmarkError(
                f"a publisher failed: {(workdir / 'publishers.log').read_text()[-800:]}"
            )
        common.CHILDREN.forget(process)
        times = json.loads(out.read_text())["sent"]
        sent += [(m[3], m[4], t) for m, (_, t) in zip(group, times, strict=True)]
    return sent


def bare_subscriber(
    workdir: pathlib.Path, port: int, expect: int, tag: str, end_session: bool = False
) -> tuple[subprocess.Popen[bytes], pathlib.Path]:
    out = workdir / f"bare-{tag}.json"
    ready = workdir / f"bare-{tag}.ready"
    command = common.python(
        "benchmarks/mqtt_workers.py",
        "subscribe",
        "--port",
        str(port),
        "--client-id",
        "bare-subscriber",
        "--topic",
        topics.shared(SHARE_BARE, "proof"),
        "--expect",
        str(expect),
        "--ready",
        str(ready),
        "--out",
        str(out),
        *(["--end-session"] if end_session else []),
    )
    process = common.CHILDREN.start(command, log=workdir / "bare.log")
    common.wait_until(lambda: ready.exists() or process.poll() is not None, 30, "bare SUBACK")
    return process, out


def finish_bare(
    process: subprocess.Popen[bytes], out: pathlib.Path, workdir: pathlib.Path
) -> tuple[list[list[typing.Any]], float]:
    """(topic, arrival) of each message, and the CPU seconds from the first to the last."""
    if process.wait(timeout=600) != 0:
        raise common.BenchmarkError(f"bare subscriber: {(workdir / 'bare.log').read_text()[-800:]}")
    common.CHILDREN.forget(process)
    result = json.loads(out.read_text())
    return list(result["received"]), float(result["cpu_s"])


def drain_rate(times: list[float]) -> float:
    if len(times) < 2 or max(times) == min(times):
        raise common.BenchmarkError("too few messages to time a drain")
    return (len(times) - 1) / (max(times) - min(times))


def bare_latencies(
    sent: list[tuple[str, int, float]],
    received: list[list[typing.Any]],
    devices: list[campus.Device],
) -> list[float]:
    """Per topic, the k-th message received is the k-th sent (QoS 1, one publisher each)."""
    topic_of = {d.device: d.topic for d in devices}
    sent_by_topic: dict[str, list[float]] = {}
    for device, _, at in sent:
        sent_by_topic.setdefault(topic_of[device], []).append(at)
    got_by_topic: dict[str, list[float]] = {}
    for topic, at in received:
        got_by_topic.setdefault(topic, []).append(at)
    latencies = []
    for topic, times in sent_by_topic.items():
        for at_sent, at_got in zip(times, got_by_topic.get(topic, []), strict=False):
            latencies.append((at_got - at_sent) * 1000)
    return latencies


def stored(db_path: pathlib.Path) -> tuple[int, int, int]:
    """(proofs stored, first received_at, last received_at) read beside central (WAL)."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as db:
        row = db.execute(
            "SELECT COUNT(*), MIN(received_at), MAX(received_at) FROM proofs"
        ).fetchone()
    return int(row[0]), int(row[1] or 0), int(row[2] or 0)


async def provision(data_dir: pathlib.Path, devices: list[campus.Device]) -> str:
    async with campus.Store(data_dir) as bench_store:
        await bench_store.add_devices(devices)
        return await bench_store.admin_token()


async def central_live(
    central: campus.Central,
    token: str,
    workdir: pathlib.Path,
    port: int,
    messages: list[Message],
    publishers: int,
) -> list[float]:
    async with campus.EventStream(central.url, token) as stream:
        sent = await asyncio.to_thread(publish, workdir, port, messages, publishers, "live-central")
        wanted = {(device, seq): at for device, seq, at in sent}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = {(e[2]["device"], e[2]["seq"]) for e in stream.events if e[1] == "proof"}
            if wanted.keys() <= seen:
                break
            await asyncio.sleep(0.1)
        latencies = [
            (at - wanted[(data["device"], data["seq"])]) * 1000
            for at, kind, data in stream.events
            if kind == "proof" and (data["device"], data["seq"]) in wanted
        ]
    if len(latencies) < len(wanted):
        raise common.BenchmarkError(
            f"central emitted {len(latencies)} of {len(wanted)} proof events: {central.log_tail()}"
        )
    return latencies


def measure_bare(
    args: typing.Any, workdir: pathlib.Path, port: int, sizes: Sizes
) -> tuple[float, float, list[float]]:
    """The bare subscriber drains the same backlog `REPEATS` times (it takes well under a
    second each time): the median rate and CPU microseconds per message, and latencies."""
    common.progress(f"bare: signing {sizes.total} proofs of {sizes.devices} devices")
    devices = campus.make_devices(sizes.devices)
    backlog = generate(devices, sizes.per_device, 0, 0)
    process, out = bare_subscriber(workdir, port, 0, "register")
    finish_bare(process, out, workdir)  # registers the session; nothing to drain yet
    rates = []
    cpu_us = []
    for attempt in range(REPEATS):
        publish(workdir, port, backlog, sizes.publishers, f"backlog-bare-{attempt}")
        process, out = bare_subscriber(workdir, port, sizes.total, f"drain-{attempt}")
        received, cpu_s = finish_bare(process, out, workdir)
        rates.append(drain_rate([at for _, at in received]))
        cpu_us.append(cpu_s * 1e6 / max(1, len(received) - 1))
    rate = statistics.median(rates)
    common.progress(
        f"bare: {rate:,.0f} proofs/s (drains: {', '.join(f'{r:,.0f}' for r in rates)});"
        f" latency at {args.latency_rate:g}/s"
    )
    live = generate(devices, sizes.live_per_device, time.time() + 1.5, args.latency_rate)
    process, out = bare_subscriber(workdir, port, len(live), "live", end_session=True)
    sent = publish(workdir, port, live, sizes.publishers, "live-bare")
    received, _ = finish_bare(process, out, workdir)
    return rate, statistics.median(cpu_us), bare_latencies(sent, received, devices)


def measure_central(
    args: typing.Any, workdir: pathlib.Path, broker: broker_mod.Broker, sizes: Sizes
) -> tuple[float, float, list[float], dict[str, typing.Any]]:
    devices = campus.make_devices(sizes.devices)
    common.progress(f"central: provisioning {sizes.devices} enrolled devices")
    central = campus.Central(
        workdir / "central",
        broker.url,
        extra={
            "mqtt_share_group": SHARE_CENTRAL,
            "clock_alert_s": 3600,  # a backlog's iat lag behind by design
            "offline_grace_s": 3600,
        },
        profile=args.profile,
    )
    token = asyncio.run(provision(central.data_dir, devices))
    common.progress("central: first start (creates its persistent session), then stop")
    central.start()
    central.stop()
    common.progress(f"central: signing {sizes.total} proofs; publishers fill its queue")
    backlog = generate(devices, sizes.per_device, 0, 0)
    publish(workdir, broker.port, backlog, sizes.publishers, "backlog-central")
    common.progress("central: draining")
    central.start(wait_mqtt=False)
    db_path = central.data_dir / "central.db"
    last = [0, time.monotonic()]
    cpu_at: list[tuple[int, float]] = []  # (stored, central's CPU seconds) during the drain
    assert central.process is not None

    def drained() -> bool:
        count = stored(db_path)[0]
        if 0 < count < sizes.total or not cpu_at:
            cpu_at.append((count, common.read_proc_stat(central.process.pid)[0]))
        if count != last[0]:
            last[:] = [count, time.monotonic()]
        elif time.monotonic() - last[1] > 30:
            raise common.BenchmarkError(f"central stalled at {count}/{sizes.total} stored")
        return count >= sizes.total

    common.wait_until(drained, max(120, sizes.total / 20), "central to store the backlog", 0.05)
    count, first_ms, last_ms = stored(db_path)
    rate = (count - 1) / ((last_ms - first_ms) / 1000)
    # Between the first sample with proofs stored and the last one before the end: CPU of all
    # of central's threads (event loop, SQLite, signature worker) per proof stored meanwhile.
    during = [sample for sample in cpu_at if 0 < sample[0] < sizes.total]
    cpu_us = (
        (during[-1][1] - during[0][1]) * 1e6 / (during[-1][0] - during[0][0])
        if len(during) > 1 and during[-1][0] > during[0][0]
        else float("nan")
    )
    common.progress(f"central: {rate:,.0f} proofs/s; latency at {args.latency_rate:g}/s")
    live = generate(devices, sizes.live_per_device, time.time() + 2, args.latency_rate)
    latencies = asyncio.run(
        central_live(central, token, workdir, broker.port, live, sizes.publishers)
    )
    rejections = common.http_json(central.url + "/api/v1/rejections", token) or {}
    central.stop()
    if args.profile is not None and args.profile.exists():
        common.print_profile(args.profile)
    return rate, cpu_us, latencies, rejections


def run() -> int:
    parser = common.parser(__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, help="enrolled devices (default 200, quick 100)")
    parser.add_argument("--proofs", type=int, help="backlog proofs per device (100, quick 40)")
    parser.add_argument("--publishers", type=int, help="publisher processes (4, quick 2)")
    parser.add_argument(
        "--latency-rate", type=float, default=100, help="offered proofs/s for latency (100)"
    )
    parser.add_argument(
        "--latency-s", type=float, help="seconds of the latency phase (20, quick 5)"
    )
    parser.add_argument("--profile", type=pathlib.Path, help="cProfile central's drain here")
    args = parser.parse_args()
    n_devices = common.sized(args.devices, 200, 100, args.quick)
    latency_s = common.sized(args.latency_s, 20, 5, args.quick)
    sizes = Sizes(
        devices=n_devices,
        per_device=common.sized(args.proofs, 100, 40, args.quick),
        publishers=common.sized(args.publishers, 4, 2, args.quick),
        live_per_device=max(1, round(args.latency_rate * latency_s / max(1, n_devices))),
    )
    if min(sizes.devices, sizes.per_device - 1, sizes.publishers, args.latency_rate) <= 0:
        raise common.BenchmarkError("devices, proofs (>= 2), publishers and rates must be > 0")

    with tempfile.TemporaryDirectory(prefix="roomproof-bench-ingest-") as tmp:
        workdir = pathlib.Path(tmp)
        broker = campus.start_broker(workdir / "mosquitto")
        try:
            bare_rate, bare_cpu, bare_lat = measure_bare(args, workdir, broker.port, sizes)
            central_rate, central_cpu, central_lat, rejections = measure_central(
                args, workdir, broker, sizes
            )
        finally:
            common.CHILDREN.stop_all()  # before the temporary directory goes

    payload_bytes = len(campus.make_devices(1)[0].next_proof(campus.now_ms()))
    rejected = sum((rejections.get("counts") or {}).values())
    figures = [
        common.Figure(
            "ingest_rate",
            central_rate,
            "proofs/s",
            bare_rate,
            common.Target(">=", 0.70, "ratio"),
            f"backlog of {sizes.total} proofs from {sizes.devices} devices,"
            f" {sizes.publishers} publishers, {payload_bytes} B each;"
            " baseline: bare paho QoS 1 subscriber, same broker and shared subscription",
        ),
        common.Figure(
            "ingest_cpu_per_proof",
            central_cpu,
            "us",
            bare_cpu,
            note="CPU time of all of central's threads per proof stored during the drain;"
            " baseline: the bare subscriber's CPU per message. With C cores free for the"
            " consumer, the rate ratio cannot exceed C x baseline / value",
        ),
        common.Figure(
            "ingest_latency_p50",
            common.percentile(central_lat, 50),
            "ms",
            common.percentile(bare_lat, 50),
            note=f"publish -> SSE `proof` event at {args.latency_rate:g} proofs/s offered",
        ),
        common.Figure(
            "ingest_latency_p99",
            common.percentile(central_lat, 99),
            "ms",
            common.percentile(bare_lat, 99),
        ),
        common.Figure("ingest_rejected", float(rejected), "proofs"),
    ]
    common.report(figures, "ingest", args.json)
    return 0


if __name__ == "__main__":
    common.main(run)
