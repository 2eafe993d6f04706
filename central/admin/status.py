"""`python -m central status`: one screen for an operator, from the store and the running
service's /healthz: is central up, is it connected to the broker, which devices are silent,
displaced or drifting, what is being rejected."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request

from central.core import settings as settings_mod
from central.storage import database

SILENT_SLOTS = 3


@dataclasses.dataclass(frozen=True)
class Report:
    lines: list[str]
    problems: list[str]


def _health(settings: settings_mod.CentralSettings) -> dict[str, str] | None:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    try:
        with urllib.request.urlopen(f"http://{host}:{settings.http_port}/healthz", timeout=3) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as exc:  # 503 while the store cannot write: still an answer
        try:
            return dict(json.loads(exc.read()))
        except (OSError, ValueError):
            return None
    except (urllib.error.URLError, OSError, ValueError):
        return None


async def report(settings: settings_mod.CentralSettings, db: database.Database) -> Report:
    lines: list[str] = []
    problems: list[str] = []
    health = _health(settings)
    if health is None:
        lines.append(f"service        not answering on port {settings.http_port}")
        problems.append("central is not running (or not on this host/port)")
    else:
        lines.append(f"service        up, broker {health.get('mqtt')}, store {health.get('store')}")
        if health.get("store") == "unavailable":
            problems.append("central cannot write to its store (answering 503 until it can)")
        if health.get("mqtt") != "connected":
            problems.append(f"central is not connected to the broker {settings.mqtt_url}")
    now = int(time.time() * 1000)
    devices = await db.list_devices(None)
    enrolled = [d for d in devices if d.ed25519 is not None]
    online = [d for d in enrolled if d.online]
    lines.append(
        f"devices        {len(devices)} added, {len(enrolled)} enrolled, {len(online)} online"
    )
    for device in enrolled:
        name = f"{device.site}/{device.device}"
        if device.last_proof_at is None:
            problems.append(f"{name} (room {device.room}) has sent no proof yet")
            continue
        slot_ms = (device.slot_s or 20) * 1000
        age_s = (now - device.last_proof_at) / 1000
        if now - device.last_proof_at > SILENT_SLOTS * slot_ms:
            problems.append(f"{name} (room {device.room}) silent for {age_s:.0f} s")
        if device.last_verdict == "mismatch":
            problems.append(f"{name} reports it is not in room {device.room}")
    for device in devices:
        if device.ed25519 is None:
            lines.append(f"  waiting for enrollment: {device.site}/{device.device}")
    alerts = await db.list_alerts(None, True, 1000, 0)
    by_kind: dict[str, int] = {}
    for alert in alerts:
        by_kind[alert.kind] = by_kind.get(alert.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items())) or "none"
    lines.append(f"open alerts    {summary}")
    for alert in alerts[:10]:
        lines.append(f"  {alert.kind:<9} {alert.site}/{alert.device}: {alert.reason[:80]}")
    counts, _ = await db.rejections()
    serious = {k: v for k, v in counts.items() if k not in ("duplicate",)}
    top = sorted(serious.items(), key=lambda item: -item[1])[:5]
    lines.append("rejections     " + (", ".join(f"{k} {v}" for k, v in top) if top else "none"))
    return Report(lines, problems)


def render(result: Report) -> str:
    verdict = "HEALTHY" if not result.problems else f"{len(result.problems)} PROBLEM(S)"
    issues = "".join(f"\n  - {p}" for p in result.problems)
    return f"roomproof central: {verdict}\n" + "\n".join(result.lines) + issues
