"""Room verdicts from recorded environments: the right room is verified, another site's
captures are a mismatch that raises a "device displaced" alert, cleared once back."""

from __future__ import annotations

import pathlib
import time
import typing

from scapy.utils import rdpcap

from central.domain import environment
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from edge_agent.sensors import gps
from edge_agent.sensors import wifi
from edge_agent.sensors import window
from tests.central import conftest


def recorded_env(shared_data: pathlib.Path, captures: list[str], nmea: str | None) -> dict:
    """The env an agent would build from these recordings (same decoders, same window)."""
    now = time.monotonic()
    win = window.Window(60, strongest=16, clock=lambda: now)
    decoder = wifi.Decoder()
    for capture in captures:
        for frame in rdpcap(str(shared_data / "wifi" / capture)):
            found = decoder.sighting(frame)
            if found is not None:
                win.add(wifi.to_sighting(found.fields | {"crypto": []}, now))
    if nmea:
        parser = gps.NmeaFixes()
        lines = (shared_data / "gps" / "gpsd-regress" / nmea).read_bytes().splitlines()
        for line in lines:
            fix = parser.feed(line.decode("ascii", "replace"))
            if fix is not None:
                win.add(fix.sighting(now))
    return win.env({})


async def test_right_room_verified_other_site_mismatch(
    enrolled: tuple, shared_data: pathlib.Path
) -> None:
    central, device = enrolled
    room_env = recorded_env(shared_data, ["ssid-logger-beacons.pcap"], "mt3339.log")
    elsewhere = recorded_env(
        shared_data,
        ["aircrack-wpa-psk-linksys.cap", "aircrack-test1.pcap", "aircrack-wpa3-psk.pcap"],
        "bu353s4.log",
    )
    assert room_env["wifi"] and room_env["gps"] and elsewhere["wifi"]
    status, body = await central.request(
        "PATCH",
        f"/api/v1/rooms/{central.site}/{central.room}",
        {"lat": 44.0688, "lon": -121.3142, "radius_m": 50},
        token=central.admin_token,
    )
    assert status == 200, body

    async def send(env: dict) -> dict[str, typing.Any]:
        seq = device.seq + 1
        await central.publish(device.topic("proof"), device.next_proof(env=env))

        async def stored() -> dict[str, typing.Any] | None:
            rows = await central.db.list_proofs(central.site, device.device, 1)
            return (
                {"verdict": rows[0].verdict, "reasons": rows[0].reasons}
                if (rows and rows[0].seq == seq)
                else None
            )

        return typing.cast(dict, await conftest.poll(stored, 10, f"proof {seq}"))

    # Learning: the first proofs teach the room's access points (profile_learn_proofs = 3).
    for _ in range(2):
        assert (await send(room_env))["verdict"] in ("weak", "verified")
    status, body = await central.request("GET", "/api/v1/rooms", token=central.admin_token)
    (room,) = body["rooms"]
    assert room["profile"]["state"] == "ready" and len(room["profile"]["wifi"]) == 8
    path = f"/api/v1/rooms/{central.site}/{central.room}/profile"
    status, body = await central.request(
        "POST", path, {"action": "confirm"}, token=central.admin_token
    )
    assert status == 200 and body["profile"]["state"] == "confirmed"

    verdict = await send(room_env)
    assert verdict["verdict"] == "verified", verdict
    assert any("wifi overlap" in r for r in verdict["reasons"])
    assert any("gps within" in r for r in verdict["reasons"])

    verdict = await send(elsewhere)
    assert verdict["verdict"] == "mismatch", verdict
    status, body = await central.request(
        "GET", "/api/v1/alerts?open=true", token=central.admin_token
    )
    (alert,) = body["alerts"]
    assert alert["kind"] == "displaced" and "outside the room" in alert["reason"]
    status, body = await central.request("GET", "/api/v1/devices", token=central.admin_token)
    assert body["devices"][0]["verdict"] == "mismatch"
    await send(elsewhere)  # still displaced: no second alert
    status, body = await central.request("GET", "/api/v1/alerts", token=central.admin_token)
    assert len(body["alerts"]) == 1

    # A check-in with the displaced device's token is recorded, but flagged with the reason;
    # the phone's location (given with consent) is kept only as a band.
    await central.add_student("s1", "1111")
    slot = slots.slot_of(int(time.time() * 1000), conftest.SLOT_S)
    link = qrtoken.url(central.url, device.site, device.device, slot, device.token(slot))
    far = {"lat": 44.2, "lon": -121.3142, "accuracy_m": 20, "consent": True}
    status, body = await central.request(
        "POST", "/api/v1/checkins", {"token": link, "student_id": "s1", "pin": "1111", "geo": far}
    )
    assert status == 201, body
    assert body["checkin"]["status"] == "flagged"
    assert body["checkin"]["flags"] == [
        "room device reports it is not in its room",
        "phone location is far from the room",
    ]
    assert body["checkin"]["evidence"]["geo_band"] == "far"

    assert (await send(room_env))["verdict"] == "verified"
    status, body = await central.request(
        "GET", "/api/v1/alerts?open=true", token=central.admin_token
    )
    assert body["alerts"] == []


def test_judge_rules() -> None:
    profile = environment.Profile(
        "s",
        "r",
        "confirmed",
        frozenset({"aa:00:00:00:00:01"}),
        frozenset({"ibeacon:u/1/2"}),
        3,
        3,
        {},
    )
    assert environment.judge({}, None, None, 50, profile).verdict == "weak"
    near = {"gps": {"lat": 48.0, "lon": 11.0, "accuracy_m": 30.0}}
    assert environment.judge(near, 48.0003, 11.0, 50, None).verdict == "verified"  # 33 m
    far = {"gps": {"lat": 48.01, "lon": 11.0, "accuracy_m": 30.0}}
    assert environment.judge(far, 48.0, 11.0, 50, None).verdict == "mismatch"  # 1.1 km
    beacon = {"ble": [{"kind": "ibeacon", "id": "u/1/2", "rssi": -70}]}
    assert environment.judge(beacon, None, None, 50, profile).verdict == "verified"
    learning = environment.Profile("s", "r", "learning", frozenset(), frozenset(), 3, 1, {})
    result = environment.judge({}, None, None, 50, learning)
    assert result.verdict == "weak" and "learning (1/3)" in result.reasons[0]
    assert round(environment.distance_m(0, 0, 0, 1)) == 111195


async def test_admin_edits_geofence_and_profile(central: conftest.Central) -> None:
    path = f"/api/v1/rooms/{central.site}/{central.room}"
    token = central.admin_token
    status, body = await central.request(
        "PATCH", path, {"lat": 48.1, "lon": 11.5, "radius_m": 75}, token=token
    )
    assert status == 200 and body["room"]["radius_m"] == 75 and body["room"]["lat"] == 48.1
    for bad in (
        {"lat": 48.1, "lon": None},
        {"lat": 91, "lon": 0},
        {"radius_m": 0},
        {"radius_m": True},
        {"x": 1},
    ):
        status, body = await central.request("PATCH", path, bad, token=token)
        assert status == 400 and "error" in body, bad
    status, body = await central.request(
        "POST",
        path + "/profile",
        {"action": "confirm", "wifi": ["00:11:22:33:44:55"], "ble": ["eddystone-uid:abc"]},
        token=token,
    )
    assert status == 200 and body["profile"]["state"] == "confirmed"
    assert body["profile"]["wifi"] == ["00:11:22:33:44:55"]
    status, body = await central.request(
        "POST", path + "/profile", {"action": "confirm", "wifi": ["nope"]}, token=token
    )
    assert status == 400
    room = await central.db.get_room(central.site, central.room)
    assert room is not None and room.radius_m == 75
