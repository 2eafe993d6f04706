"""`python -m edge_agent status`: one screen for an operator at the Pi, from what the running
agent leaves in its state dir (metrics file, outbox, enrollment record); no network needed."""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import sqlite3
import time

from edge_agent import metrics

STALE_AFTER_S = 30.0
QUEUE_WARN = 3


@dataclasses.dataclass(frozen=True)
class Report:
    lines: list[str]
    problems: list[str]


def _values(path: pathlib.Path) -> dict[str, float]:
    """metric name (+ kind/sensor label) -> value."""
    # Imported here: `python -m edge_agent run` imports this module too, and the agent need
    # not carry prometheus_client (over 1 MiB of RSS) for a command it never runs.
    from prometheus_client import parser

    values: dict[str, float] = {}
    for family in parser.text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            extra = sample.labels.get("kind") or sample.labels.get("sensor")
            values[f"{sample.name}:{extra}" if extra else sample.name] = sample.value
    return values


def report(state_dir: pathlib.Path, metrics_file: pathlib.Path | None = None) -> Report:
    lines: list[str] = []
    problems: list[str] = []
    path = metrics_file or state_dir / metrics.FILE_NAME
    if not state_dir.is_dir():
        return Report([f"state dir {state_dir}: missing"], [f"no state dir at {state_dir}"])
    lines.append(f"state dir      {state_dir}")
    lines.append(f"enrolled       {'yes' if (state_dir / 'enrollment.json').exists() else 'no'}")
    outbox = state_dir / "outbox.db"
    if outbox.exists():
        with contextlib.closing(sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)) as db:
            seq, slot = db.execute("SELECT seq, slot FROM chain WHERE id = 1").fetchone()
            queued = dict(db.execute("SELECT kind, COUNT(*) FROM items GROUP BY kind").fetchall())
        lines.append(f"last proof     seq {seq}, slot {slot}")
        proofs = queued.get("proof", 0)
        lines.append(f"outbox         {proofs} proofs, {queued.get('telemetry', 0)} telemetry")
        if proofs > QUEUE_WARN:
            problems.append(f"{proofs} proofs waiting to be published")
    else:
        problems.append("no outbox yet (the agent has never run here)")
    if not path.exists():
        problems.append(f"no metrics file {path}: the agent is not running")
        return Report(lines, problems)
    age = time.time() - path.stat().st_mtime
    lines.append(f"metrics        {path} ({age:.0f} s old)")
    if age > STALE_AFTER_S:
        problems.append(f"metrics are {age:.0f} s old: the agent is not running or is stuck")
    values = _values(path)
    checks = (
        ("roomproof_edge_broker_up", "broker", "not connected to the broker"),
        ("roomproof_edge_storage_ok", "storage", "the state dir is full or unwritable"),
        (
            "roomproof_edge_showing_tokens",
            "codes shown",
            "waiting for a trusted clock (NTP or GPS)",
        ),
        ("roomproof_edge_enrolled", "enrollment", "not enrolled with central"),
    )
    for name, label, problem in checks:
        ok = values.get(name) == 1.0
        lines.append(f"{label:<14} {'ok' if ok else 'PROBLEM'}")
        if not ok:
            problems.append(problem)
    trusted = values.get("roomproof_edge_trusted_time") == 1.0
    lines.append(f"clock          {'trusted' if trusted else 'not synchronised'}")
    display = values.get("roomproof_edge_display_age_seconds")
    lines.append(f"display        {'never shown' if display is None else f'{display:.1f} s ago'}")
    if display is None or display > 5:
        problems.append("the screen is not being updated")
    for key, value in sorted(values.items()):
        if key.startswith("roomproof_edge_sensor_up:"):
            sensor = key.split(":", 1)[1]
            lines.append(f"sensor {sensor:<7} {'ok' if value == 1.0 else 'PROBLEM'}")
            if value != 1.0:
                problems.append(f"sensor {sensor} is not working")
        if key.startswith("roomproof_edge_outbox_dropped:") and value > 0:
            problems.append(f"{value:.0f} {key.split(':', 1)[1]} rows were dropped by the outbox")
    return Report(lines, problems)


def render(result: Report) -> str:
    verdict = "HEALTHY" if not result.problems else f"{len(result.problems)} PROBLEM(S)"
    body = "\n".join(result.lines)
    issues = "".join(f"\n  - {p}" for p in result.problems)
    return f"roomproof edge agent: {verdict}\n{body}{issues}"
