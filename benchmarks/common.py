"""What every benchmark shares: figures with baseline, ratio and target, percentiles, the
printed table, JSON output, progress on stderr, and child processes that never outlive a run.

Each benchmark measures roomproof and a bare baseline on the same machine in the same run, so
that a loaded or slow machine moves both and the ratio stays meaningful.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import math
import os
import pathlib
import pstats
import signal
import subprocess
import sys
import time
import typing
import urllib.error
import urllib.request

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
_STARTED = time.monotonic()
N = typing.TypeVar("N", int, float)
_OPS = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
}


class BenchmarkError(Exception):
    """A benchmark that cannot run or produced no usable figure; the message says why."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A DESIGN §5 target on a figure's `value` or on its `ratio` to the baseline."""

    op: str
    threshold: float
    on: str = "value"  # "value" or "ratio"

    def __post_init__(self) -> None:
        if self.op not in _OPS or self.on not in ("value", "ratio"):
            raise ValueError(f"bad target {self.on} {self.op} {self.threshold}")

    def describe(self, unit: str) -> str:
        if self.on == "ratio":
            return f"ratio {self.op} {self.threshold:g}"
        return f"{self.op} {self.threshold:g} {unit}".rstrip()

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        subject = ratio if self.on == "ratio" else value
        if subject is None or math.isnan(subject):
            return None
        return bool(_OPS[self.op](subject, self.threshold))


@dataclasses.dataclass(frozen=True)
class Figure:
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        return self.target.met(self.value, self.ratio) if self.target else None

    def json(self) -> dict[str, typing.Any]:
        ratio = self.ratio
        return {
            "name": self.name,
            "value": _round(self.value),
            "unit": self.unit,
            "baseline": _round(self.baseline),
            "ratio": _round(ratio, 3),
            "target": self.target.describe(self.unit) if self.target else None,
            "met": self.met,
        }


def _round(value: float | None, digits: int = 2) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, digits)


def percentile(values: typing.Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): an observed value, never an interpolation."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def progress(message: str) -> None:
    """Long phases say what they do on stderr, so stdout stays the table."""
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def _cell(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def columns(headers: typing.Sequence[str], rows: typing.Sequence[typing.Sequence[str]]) -> str:
    """Rows aligned under their headers."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def row(figure: dict[str, typing.Any]) -> list[str]:
    """A figure's JSON form as table cells."""
    met = figure.get("met")
    return [
        str(figure["name"]),
        _cell(figure["value"]),
        str(figure["unit"]),
        _cell(figure["baseline"]),
        _cell(figure["ratio"], 3),
        str(figure["target"] or ""),
        "yes" if met is True else "NO" if met is False else "",
    ]


HEADERS = ("figure", "value", "unit", "baseline", "ratio", "target", "met")


def table(figures: typing.Sequence[Figure], title: str) -> str:
    lines = ["", title, columns(HEADERS, [row(f.json()) for f in figures])]
    notes = [f"  {f.name}: {f.note}" for f in figures if f.note]
    if notes:
        lines += ["notes:", *notes]
    return "\n".join(lines)


def write_json(path: pathlib.Path, figures: typing.Sequence[Figure]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([f.json() for f in figures], indent=2) + "\n")


def report(figures: typing.Sequence[Figure], title: str, json_path: pathlib.Path | None) -> None:
    print(table(figures, title), flush=True)
    if json_path is not None:
        write_json(json_path, figures)
        progress(f"wrote {json_path}")


def sized(given: N | None, full: N, quick: N, is_quick: bool) -> N:
    """An option's value: as given (even 0, which the caller then refuses), else the
    default of the full or the --quick run."""
    if given is not None:
        return given
    return quick if is_quick else full


def print_profile(path: pathlib.Path, top: int = 30) -> None:
    """The functions central spent its own time in (cProfile sees the event loop's thread)."""
    stats = pstats.Stats(str(path), stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(r"central/|edge_agent/", top)


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --quick and --json OUT."""
    args = argparse.ArgumentParser(description=description)
    args.add_argument(
        "--quick", action="store_true", help="smaller, shorter run (for run.py --quick)"
    )
    args.add_argument("--json", type=pathlib.Path, metavar="OUT", help="write the figures here")
    return args


def main(run: typing.Callable[[], int]) -> None:
    """Run a benchmark; a BenchmarkError or Ctrl-C ends it with one line, children stopped."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code = run()
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 130
    finally:
        CHILDREN.stop_all()
    sys.exit(code)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Children:
    """Every process a benchmark starts, stopped (TERM, then KILL) on the way out."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []
        atexit.register(self.stop_all)

    def start(
        self,
        args: typing.Sequence[str],
        log: pathlib.Path | None = None,
        env: dict[str, str] | None = None,
        attached: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Output goes to `log`, or nowhere, or (attached) to this process's own."""
        out: typing.Any = None if attached else subprocess.DEVNULL
        if log is not None:
            out = log.open("ab")
        try:
            process = subprocess.Popen(
                list(args),
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                env={**os.environ, "PYTHONPATH": _pythonpath(), **(env or {})},
            )
        finally:
            if log is not None:
                out.close()
        self._running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self._running:
            self._running.remove(process)
        return int(process.returncode)

    def adopt(self, process: subprocess.Popen[bytes]) -> None:
        """A child started elsewhere (tests.broker.Broker) that must not outlive the run."""
        self._running.append(process)

    def forget(self, process: subprocess.Popen[bytes]) -> None:
        """A child that ended by itself (and was waited for)."""
        if process in self._running:
            self._running.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self._running)):
            self.stop(process, timeout=10)


CHILDREN = Children()


def _pythonpath() -> str:
    """The checkout first (benchmarks, tests and the product import from it)."""
    return os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)


def python(*args: str) -> list[str]:
    """A command line running this interpreter (the project's venv)."""
    return [sys.executable, *args]


def wait_until(
    check: typing.Callable[[], typing.Any], timeout: float, what: str, every: float = 0.05
) -> typing.Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchmarkError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def http_json(url: str, token: str | None = None, timeout: float = 2.0) -> typing.Any:
    """GET a JSON document; None when nothing answers (yet)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def read_proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds user+system, RSS in MiB) of a live process, from /proc (Linux) or ps."""
    stat = pathlib.Path(f"/proc/{pid}/stat")
    if stat.exists():
        fields = stat.read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu_s = (int(fields[11]) + int(fields[12])) / ticks
        rss_kib = 0
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
        return cpu_s, rss_kib / 1024
    out = subprocess.run(
        ["ps", "-o", "rss=,cputime=", "-p", str(pid)], capture_output=True, text=True, check=True
    ).stdout.split()
    parts = [float(p) for p in out[1].replace("-", ":").split(":")]
    cpu_s = sum(value * 60**i for i, value in enumerate(reversed(parts)))
    return cpu_s, int(out[0]) / 1024
