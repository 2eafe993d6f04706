"""Central's Prometheus endpoint and device telemetry, over a real broker and real HTTP."""

from __future__ import annotations

import json
import re
import time

from central.http import auth
from edge_agent.protocol import qrtoken
from edge_agent.protocol import report
from edge_agent.protocol import slots
from tests.central import conftest


def sample(text: str, name: str, labels: str = "") -> float | None:
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else None


async def test_metrics_count_proofs_checkins_and_devices(enrolled: tuple) -> None:
    central, device = enrolled
    status, text = await central.request("GET", "/metrics")
    assert status == 401
    await central.add_student("s1", "1234")
    slot = slots.slot_of(int(time.time() * 1000), conftest.SLOT_S)
    link = qrtoken.url(central.url, device.site, device.device, slot, device.token(slot))
    body = {"token": link, "student_id": "s1", "pin": "1234"}
    assert (await central.request("POST", "/api/v1/checkins", body))[0] == 201
    assert (await central.request("POST", "/api/v1/checkins", body))[0] == 409
    await central.publish(device.topic("proof"), b"garbage")

    async def scraped() -> str | None:
        status, text = await central.request("GET", "/metrics", token=central.operator_token)
        assert status == 200
        return text if sample(text, "roomproof_proofs_total", '{outcome="malformed"}') else None

    text = await conftest.poll(scraped, 10, "the malformed proof to be counted")
    assert sample(text, "roomproof_proofs_total", '{outcome="accepted"}') == 1.0
    assert sample(text, "roomproof_checkins_total", '{outcome="present"}') == 1.0
    assert sample(text, "roomproof_checkins_total", '{outcome="duplicate"}') == 1.0
    assert sample(text, "roomproof_devices", '{state="enrolled"}') == 1.0
    assert sample(text, "roomproof_proof_ingest_seconds_count") == 1.0
    labels = '{le="+Inf",method="POST",route="/api/v1/checkins",status="201"}'
    assert sample(text, "roomproof_http_request_seconds_bucket", labels) == 1.0


async def test_device_telemetry_is_kept_and_bad_telemetry_counted(enrolled: tuple) -> None:
    central, device = enrolled
    signed = device.report(
        report.Telemetry,
        uptime_s=42,
        outbox_depth={"proof": 7, "telemetry": 1},
        clock={"source": "ntp", "uncertainty_ms": 10},
        sensors={"gps": {"source": "gpsd", "mode": "gpsd", "status": "ok"}},
    )
    await central.publish(device.topic("telemetry"), signed)
    for bad in (b"{", b"[]", json.dumps({"outbox_depth": "x"}).encode(), b"x" * 20000):
        await central.publish(device.topic("telemetry"), bad)

    async def kept() -> dict | None:
        status, body = await central.request("GET", "/api/v1/devices", token=central.admin_token)
        assert status == 200
        return body["devices"][0]["telemetry"]

    telemetry = await conftest.poll(kept, 10, "telemetry in the device list")
    assert telemetry["outbox_depth"] == {"proof": 7, "telemetry": 1}
    assert telemetry["uptime_s"] == 42 and telemetry["sensors"]["gps"]["status"] == "ok"

    async def counted() -> bool:
        return (await central.rejections()).get("unsigned", 0) == 4

    await conftest.poll(counted, 10, "4 unsigned telemetry messages counted")
    _, text = await central.request("GET", "/metrics", token=central.admin_token)
    labels = f'{{device="{device.device}",site="{device.site}"}}'
    assert sample(text, "roomproof_device_outbox_depth", labels) == 7.0
    # A site's token reads only its own site's series; the process-wide ones need an operator.
    assert sample(text, "roomproof_proofs_total", '{outcome="accepted"}') is None


async def test_tokens_are_listed_and_revoked_by_admins_only(central: conftest.Central) -> None:
    auditor = auth.new_token()
    await central.db.add_admin_token(
        auth.token_hash(auditor), "auditor", "grafana", 5, site=central.site
    )
    status, body = await central.request("GET", "/api/v1/tokens", token=auditor)
    assert status == 403
    status, body = await central.request("GET", "/api/v1/tokens", token=central.admin_token)
    assert status == 200
    (row,) = [t for t in body["tokens"] if t["name"] == "grafana"]
    assert row["role"] == "auditor" and len(row["id"]) == 12
    assert auditor not in str(body) and auth.token_hash(auditor) not in str(body)
    assert (await central.request("GET", "/metrics", token=auditor))[0] == 200
    status, _ = await central.request(
        "DELETE", f"/api/v1/tokens/{row['id']}", token=central.admin_token
    )
    assert status == 200
    assert (await central.request("GET", "/metrics", token=auditor))[0] == 401
    status, body = await central.request(
        "DELETE", f"/api/v1/tokens/{row['id']}", token=central.admin_token
    )
    assert status == 404


async def test_admin_actions_are_audited(central: conftest.Central) -> None:
    auditor = auth.new_token()
    await central.db.add_admin_token(
        auth.token_hash(auditor), "auditor", "audit desk", 5, site=central.site
    )
    path = f"/api/v1/rooms/{central.site}/{central.room}"
    token = central.admin_token
    assert (await central.request("PATCH", path, {"radius_m": 80}, token=token))[0] == 200
    body = {"site": central.site, "course": "c1", "timezone": "UTC"}
    assert (await central.request("POST", "/api/v1/courses", body, token=token))[0] == 201
    assert (await central.request("PATCH", path, {"radius_m": 0}, token=token))[0] == 400
    status, body = await central.request("GET", "/api/v1/audit", token=auditor)
    assert status == 200
    entries = [(e["action"], e["target"]) for e in body["audit"]]
    assert entries == [
        ("room_geofence", f"{central.site}/{central.room}"),
        ("course_add", f"{central.site}/c1"),
    ]  # the refused change is not an action
    admin_id = auth.token_hash(token)[:12]
    assert {e["actor"] for e in body["audit"]} == {f"admin:{admin_id}"}
    assert '"radius_m": 80' in body["audit"][0]["detail"]
    status, page = await central.request("GET", "/api/v1/audit?limit=1", token=auditor)
    assert len(page["audit"]) == 1 and page["next_after"] == page["audit"][0]["id"]
