"""The whole path on one machine: bundle -> agent enrolls -> QR on a framebuffer -> check-in."""

from __future__ import annotations

import itertools
import json
import pathlib
import signal
import subprocess
import sys
import time
import typing

import pytest
import zxingcpp
from PIL import Image

from edge_agent import keystore
from edge_agent.protocol import b64
from edge_agent.protocol import chain
from edge_agent.protocol import command
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken
from tests import broker as broker_mod
from tests import system

SLOT_S = 5
FB_W, FB_H = 640, 480


@pytest.fixture()
def room(
    tmp_path: pathlib.Path, own_broker: broker_mod.Broker
) -> typing.Iterator[dict[str, typing.Any]]:
    central = system.Central(tmp_path / "central", own_broker.url)
    bundle = tmp_path / "bundle.toml"
    token = central.provision(bundle, room_name="Hall A-101")
    central.cli("student", "add", "--site", "campus", "--student-id", "s1", "--pin", "432109")
    central.cli("student", "add", "--site", "campus", "--student-id", "s2", "--pin", "876543")
    framebuffer = tmp_path / "fb0"
    framebuffer.write_bytes(bytes(FB_W * FB_H * 4))
    agent = system.Agent(
        tmp_path / "agent",
        bundle,
        f'slot_s = {SLOT_S}\nrequire_trusted_time = false\ndisplay_sinks = ["framebuffer"]\n'
        f'framebuffer_device = "{framebuffer}"\nframebuffer_width = {FB_W}\n'
        f"framebuffer_height = {FB_H}\nframebuffer_bpp = 32\n",
    )
    central.start()
    agent.start()
    try:
        yield {
            "central": central,
            "agent": agent,
            "broker": own_broker,
            "fb": framebuffer,
            "admin": system.Http(central.url, token),
            "http": system.Http(central.url),
        }
    finally:
        if agent.process is not None:
            agent.stop(signal.SIGKILL)
        central.stop()


def read_qr(framebuffer: pathlib.Path) -> str | None:
    image = Image.frombytes("RGB", (FB_W, FB_H), framebuffer.read_bytes(), "raw", "BGRX")
    found = zxingcpp.read_barcodes(image)
    return found[0].text if found else None


def device_row(admin: system.Http) -> dict[str, typing.Any] | None:
    status, body, _ = admin.request("GET", "/api/v1/devices")
    assert status == 200, body
    rows = [row for row in body["devices"] if row["device"] == "pi-a101"]
    return rows[0] if rows and rows[0].get("last_seq") else None


def stored_proofs(admin: system.Http) -> list[dict[str, typing.Any]]:
    status, body, _ = admin.request("GET", "/api/v1/proofs?site=campus&device=pi-a101&limit=1000")
    assert status == 200, body
    return sorted(body["proofs"], key=lambda row: row["seq"])


def assert_valid_chain(rows: list[dict[str, typing.Any]], public: bytes) -> None:
    previous: str | None = None
    for row in rows:
        parsed, claims = proof.decode(row["jws"])
        assert jws.verify(parsed, public)
        if previous is not None:
            assert claims.prev == chain.link(previous)
        previous = row["jws"]


@pytest.mark.slow
def test_check_in_from_the_rendered_frame(room: dict[str, typing.Any]) -> None:
    admin, http = room["admin"], room["http"]
    row = system.wait_for(lambda: device_row(admin), 60, "the device's first proof at central")
    public = b64.decode(row["public_key"])

    # Start right after the QR changed: the token then stays acceptable for two whole slots.
    shown = system.wait_for(lambda: read_qr(room["fb"]), 30, "a decodable QR on the framebuffer")
    url = system.wait_for(
        lambda: (fresh := read_qr(room["fb"])) != shown and fresh, 3 * SLOT_S, "the next QR"
    )
    token = qrtoken.parse(url)
    assert url.startswith(room["central"].url + "/c/campus/pi-a101/")
    assert qrtoken.verify(public, "campus", "pi-a101", "a-101", token.slot, token.signature)

    status, page, _ = http.request("GET", token.path)
    assert status == 200 and "a-101" in str(page).lower()

    status, body, headers = http.request(
        "POST", "/api/v1/checkins", {"token": url, "student_id": "s1", "pin": "432109"}
    )
    assert status == 201, body
    assert body["checkin"]["student_id"] == "s1" and body["checkin"]["room"] == "a-101"
    credential = body["credential"]
    assert "roomproof_student=" in headers.get("Set-Cookie", "")

    status, body, _ = http.request(
        "POST", "/api/v1/checkins", {"token": url, "credential": credential}
    )
    assert status == 409 and body["error"]["code"] == "duplicate"

    forged_key = keys.SigningKey.generate()
    forged = qrtoken.url(
        room["central"].url,
        "campus",
        "pi-a101",
        token.slot,
        qrtoken.sign(forged_key, "campus", "pi-a101", "a-101", token.slot),
    )
    status, body, _ = http.request(
        "POST", "/api/v1/checkins", {"token": forged, "student_id": "s2", "pin": "876543"}
    )
    assert status in (400, 403) and body["error"]["code"] == "forged_token", body

    status, body, _ = http.request("GET", "/api/v1/checkins?site=campus&room=a-101")
    assert status == 401
    status, body, _ = admin.request("GET", "/api/v1/checkins?site=campus&room=a-101")
    assert status == 200 and [c["student_id"] for c in body["checkins"]] == ["s1"]

    # Two slots later the same token is stale, even for a student who has not used it.
    system.wait_for(
        lambda: (
            (device_row(admin) or {}).get("last_seq", 0) >= 1
            and stored_proofs(admin)[-1]["slot"] >= token.slot + 2
        ),
        6 * SLOT_S,
        "two more slots",
    )
    status, body, _ = http.request(
        "POST", "/api/v1/checkins", {"token": url, "student_id": "s2", "pin": "876543"}
    )
    assert status in (400, 403, 410) and body["error"]["code"] == "stale_token", body

    rows = stored_proofs(admin)
    assert len(rows) >= 3
    assert [r["seq"] for r in rows] == list(range(rows[0]["seq"], rows[0]["seq"] + len(rows)))
    assert_valid_chain(rows, public)
    assert room["agent"].stop() == 0


@pytest.mark.slow
def test_outbox_survives_sigkill_while_broker_is_down(room: dict[str, typing.Any]) -> None:
    admin, broker, agent = room["admin"], room["broker"], room["agent"]
    system.wait_for(lambda: device_row(admin), 60, "the device's first proof at central")
    broker.stop()
    before = (device_row(admin) or {})["last_seq"]
    first_slot = qrtoken.parse(system.wait_for(lambda: read_qr(room["fb"]), 30, "a QR")).slot
    # Proofs pile up in the outbox while the broker is away; then power is cut.
    queued = 3
    system.wait_for(
        lambda: (url := read_qr(room["fb"])) and qrtoken.parse(url).slot >= first_slot + queued,
        (queued + 3) * SLOT_S,
        "proofs queued while the broker is down",
    )
    agent.stop(signal.SIGKILL)
    broker.start()
    agent.start()
    system.wait_for(
        lambda: (device_row(admin) or {}).get("last_seq", 0) >= before + queued,
        60,
        "the outbox to drain after restart",
    )
    rows = stored_proofs(admin)
    seqs = [r["seq"] for r in rows]
    assert len(seqs) == len(set(seqs)), "a proof was stored twice"
    assert seqs == list(range(1, len(seqs) + 1)), f"a proof was lost: {seqs}"
    public = b64.decode((device_row(admin) or {})["public_key"])
    assert_valid_chain(rows, public)


@pytest.mark.slow
def test_central_killed_mid_ingest_loses_nothing(room: dict[str, typing.Any]) -> None:
    admin, central = room["admin"], room["central"]
    first = system.wait_for(lambda: device_row(admin), 60, "the device's first proof")["last_seq"]
    central.stop(signal.SIGKILL)
    # The agent keeps publishing; the broker queues for central's persistent session.
    first_slot = qrtoken.parse(system.wait_for(lambda: read_qr(room["fb"]), 30, "a QR")).slot
    system.wait_for(
        lambda: (url := read_qr(room["fb"])) and qrtoken.parse(url).slot >= first_slot + 2,
        5 * SLOT_S,
        "proofs published while central is down",
    )
    central.start()
    system.wait_for(
        lambda: (device_row(admin) or {}).get("last_seq", 0) >= first + 2,
        60,
        "central to catch up after restart",
    )
    seqs = [r["seq"] for r in stored_proofs(admin)]
    assert seqs == list(range(1, len(seqs) + 1)), f"lost or duplicated: {seqs}"
    status, body, _ = admin.request("GET", "/api/v1/rejections")
    assert status == 200 and "chain_broken" not in body["counts"]


@pytest.mark.slow
def test_proofs_carry_the_replayed_environment(
    tmp_path: pathlib.Path, own_broker: broker_mod.Broker, shared_data: pathlib.Path
) -> None:
    vectors = json.loads((shared_data / "ble" / "advertisements.json").read_text())["vectors"]
    ble = tmp_path / "ble.jsonl"
    ble.write_text(
        "".join(
            json.dumps({"t": 0.2 * n, "rssi": -60 - n, **v["bleak"]}) + "\n"
            for n, v in enumerate(vectors)
        )
    )
    central = system.Central(tmp_path / "central", own_broker.url)
    bundle = tmp_path / "bundle.toml"
    token = central.provision(bundle)
    agent = system.Agent(
        tmp_path / "agent",
        bundle,
        f"slot_s = {SLOT_S}\nrequire_trusted_time = false\n"
        f'wifi_source = "pcap:{shared_data}/wifi/ssid-logger-beacons.pcap?speed=200"\n'
        f'ble_source = "replay:{ble}"\n'
        f'gps_source = "replay:{shared_data}/gps/gpsd-regress/mt3339.log?speed=5"\n',
    )
    central.start()
    agent.start()
    admin = system.Http(central.url, token)
    try:

        def complete_env() -> dict[str, typing.Any] | None:
            rows = stored_proofs(admin) if device_row(admin) else []
            for row in rows:
                env = proof.decode(row["jws"])[1].env
                if env.wifi and env.ble and env.gps is not None:
                    return row
            return None

        row = system.wait_for(complete_env, 60, "a proof with WiFi, BLE and GPS in its env")
        parsed, claims = proof.decode(row["jws"])
        public = b64.decode((device_row(admin) or {})["public_key"])
        assert jws.verify(parsed, public)
        assert claims.env.gps is not None and abs(claims.env.gps.lat - 44.0688) < 0.001
        assert {ap.bssid for ap in claims.env.wifi} <= {
            line.split(",")[0]
            for line in (shared_data / "wifi" / "ssid-logger-beacons.expected.csv")
            .read_text()
            .splitlines()[1:]
        }
        assert claims.env.window_s == SLOT_S
        assert {b.kind for b in claims.env.ble} <= {
            "ibeacon",
            "altbeacon",
            "eddystone-uid",
            "eddystone-url",
        }
        # Once the recordings end, later proofs say so instead of silently carrying nothing.
        system.wait_for(
            lambda: (
                "missing"
                in (r := json.loads(b64.decode(stored_proofs(admin)[-1]["jws"].split(".")[1])))[
                    "env"
                ]
                and r["env"]["missing"].get("wifi") == "replay ended"
            ),
            60,
            "a proof that says the WiFi replay ended",
        )
    finally:
        agent.stop()
        central.stop()


def edge_status(state_dir: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "status", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_edge_status_and_metrics_file(room: dict[str, typing.Any], tmp_path: pathlib.Path) -> None:
    admin, agent, broker = room["admin"], room["agent"], room["broker"]
    system.wait_for(lambda: device_row(admin), 60, "the device's first proof")
    seen: list[str] = []

    def status_is(code: int) -> subprocess.CompletedProcess[str] | None:
        done = edge_status(agent.state)
        seen.append(done.stdout + done.stderr)
        return done if done.returncode == code else None

    try:
        healthy = system.wait_for(lambda: status_is(0), 20, "a healthy status")
    except AssertionError as exc:
        raise AssertionError(seen[-1]) from exc
    assert (
        "roomproof edge agent: HEALTHY" in healthy.stdout and "broker         ok" in healthy.stdout
    )
    text = (agent.state / "metrics.prom").read_text()
    assert 'roomproof_edge_broker_up{device="pi-a101",room="a-101",site="campus"} 1.0' in text
    assert "roomproof_edge_last_seq{" in text

    broker.stop()
    unhealthy = system.wait_for(
        lambda: (done := edge_status(agent.state)).returncode == 1 and done,
        30,
        "status to notice the broker is gone",
    )
    assert "not connected to the broker" in unhealthy.stdout, unhealthy.stdout
    broker.start()

    empty = tmp_path / "never-ran"
    empty.mkdir()
    done = edge_status(empty)
    assert done.returncode == 1 and "the agent is not running" in done.stdout


@pytest.mark.slow
def test_central_status_screen(room: dict[str, typing.Any]) -> None:
    admin, central = room["admin"], room["central"]
    system.wait_for(lambda: device_row(admin), 60, "the device's first proof")
    done = system.wait_for(
        lambda: (run := central.cli("status", check=False)).returncode == 0 and run,
        20,
        "a healthy central status",
    )
    assert "roomproof central: HEALTHY" in done.stdout
    assert "service        up, broker connected" in done.stdout
    assert "1 added, 1 enrolled, 1 online" in done.stdout

    room["agent"].stop(signal.SIGKILL)
    central.stop()
    done = central.cli("status", check=False)
    assert done.returncode == 1
    assert "central is not running" in done.stdout


@pytest.mark.slow
def test_signed_commands_are_applied_and_forgeries_refused(room: dict[str, typing.Any]) -> None:
    admin, agent, broker = room["admin"], room["agent"], room["broker"]
    system.wait_for(lambda: device_row(admin), 60, "the device's first proof")
    path = "/api/v1/devices/campus/pi-a101/commands"
    status, body, _ = admin.request(
        "POST", path, {"kind": "show_message", "args": {"text": "Exam moved to B-2", "seconds": 60}}
    )
    assert status == 201, body
    nonce = body["command"]["nonce"]

    def outcome() -> str | None:
        _, listed, _ = admin.request("GET", path)
        found = [c for c in listed["commands"] if c["nonce"] == nonce]
        return found[0]["outcome"] if found and found[0]["outcome"] != "sent" else None

    assert system.wait_for(outcome, 30, "the device's report") == "applied"
    assert "applied command show_message" in agent.log.read_text()
    status, body, _ = admin.request("POST", path, {"kind": "reboot"})
    assert status == 400

    # Commands made by hand: forged, expired, and a genuine one sent twice.
    central_key = keys.SigningKey(
        keystore.read_or_create(room["central"].workdir / "data" / "central-ed25519.key")
    )
    now = int(time.time() * 1000)
    topic = "roomproof/v1/campus/pi-a101/cmd"
    forged = command.sign(
        keys.SigningKey.generate(),
        "campus",
        "pi-a101",
        "status_report",
        {},
        "f" * 16,
        now,
        now + 60_000,
    )
    expired = command.sign(
        central_key, "campus", "pi-a101", "status_report", {}, "e" * 16, now - 120_000, now - 60_000
    )
    other = command.sign(
        central_key, "campus", "pi-b202", "status_report", {}, "o" * 16, now, now + 60_000
    )
    genuine = command.sign(
        central_key, "campus", "pi-a101", "status_report", {}, "g" * 16, now, now + 60_000
    )
    for payload in (forged, expired, other, genuine, genuine):
        broker.publish_raw(topic, payload)

    def refused() -> list[str] | None:
        text = agent.log.read_text()
        reasons = [
            r
            for r in ("bad_signature", "expired", "wrong_device", "replay")
            if f"refused a command: {r}" in text
        ]
        return reasons if len(reasons) == 4 else None

    assert system.wait_for(refused, 30, "the four refusals") == [
        "bad_signature",
        "expired",
        "wrong_device",
        "replay",
    ]
    assert agent.log.read_text().count("applied command status_report") == 1


@pytest.mark.slow
def test_set_timing_command_changes_the_rotation(room: dict[str, typing.Any]) -> None:
    admin, http = room["admin"], room["http"]
    system.wait_for(lambda: device_row(admin), 60, "the device's first proof")
    status, body, _ = admin.request(
        "POST",
        "/api/v1/devices/campus/pi-a101/commands",
        {"kind": "set_timing", "args": {"slot_s": 7, "otp_step_s": 20}},
    )
    assert status == 201, body

    def new_timing() -> list[dict[str, typing.Any]] | None:
        rows = stored_proofs(admin)
        slots_s = [proof.decode(r["jws"])[1].slot_s for r in rows]
        return rows if slots_s[-1] == 7 and SLOT_S in slots_s else None

    rows = system.wait_for(new_timing, 40, "a proof with the new rotation period")
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    claims = [proof.decode(r["jws"])[1] for r in rows]
    assert claims[-1].otp_step_s == 20
    assert all(a.iat < b.iat for a, b in itertools.pairwise(claims))
    assert (room["agent"].state / "timing.json").exists()  # kept across restarts

    # The screen now shows 7-second tokens, and central takes them.
    url = system.wait_for(
        lambda: (u := read_qr(room["fb"])) and qrtoken.parse(u).slot == claims[-1].slot and u,
        20,
        "the QR of the new slot",
    )
    status, body, _ = http.request(
        "POST", "/api/v1/checkins", {"token": url, "student_id": "s1", "pin": "432109"}
    )
    assert status == 201, body
    status, body, _ = admin.request("GET", "/api/v1/rejections")
    assert not {"schema", "clock", "chain_broken"} & set(body["counts"]), body["counts"]
