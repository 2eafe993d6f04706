"""Run every benchmark, one after the other (each in its own process), print one table and
write the figures that have a DESIGN §5 target as a JSON list.

Each entry: {"name", "value", "unit", "baseline", "ratio", "target", "met"}. The exit code
is 0 when every benchmark ran, whether or not its targets were met (the table says that).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks import common

BENCHMARKS = ("ingest", "burst", "edge", "scan_to_visible")
LEFTOVER_MARK = "roomproof-bench-"


def leftovers() -> list[str]:
    """Processes still running from a benchmark's temporary directory (there should be none)."""
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line.strip() for line in listing.splitlines() if LEFTOVER_MARK in line]


def run() -> int:
    parser = common.parser(__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    args = parser.parse_args()
    chosen = args.only or list(BENCHMARKS)
    figures: list[dict[str, object]] = []
    failed: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="roomproof-run-") as tmp:
        for name in chosen:
            out = pathlib.Path(tmp) / f"{name}.json"
            command = common.python(f"benchmarks/{name}.py", "--json", str(out))
            if args.quick:
                command.append("--quick")
            common.progress(f"== {name} ==")
            process = common.CHILDREN.start(command, attached=True)
            code = process.wait()
            common.CHILDREN.forget(process)
            if code != 0 or not out.exists():
                failed.append(name)
                common.progress(f"{name} failed (exit {code})")
                continue
            figures += [{"benchmark": name, **f} for f in json.loads(out.read_text())]
    elapsed = time.monotonic() - started
    targeted = [f for f in figures if f.get("target")]
    print(f"\nall targets ({elapsed:.0f} s)", flush=True)
    print(
        common.columns(
            ("benchmark", *common.HEADERS),
            [[str(f["benchmark"]), *common.row(f)] for f in targeted],
        ),
        flush=True,
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                [{k: v for k, v in f.items() if k != "benchmark"} for f in targeted], indent=2
            )
            + "\n"
        )
        common.progress(f"wrote {args.json}")
    left = leftovers()
    if left:
        common.progress("processes left running (a bug in a benchmark):\n  " + "\n  ".join(left))
    if failed:
        raise common.BenchmarkError(f"failed: {', '.join(failed)}")
    return 1 if left else 0


if __name__ == "__main__":
    common.main(run)
