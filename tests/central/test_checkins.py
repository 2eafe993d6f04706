"""Check-ins over real HTTP: tokens by the device's clock, students, OTP, errors, events."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import typing

import aiohttp
import pyotp
import yarl

from central.storage import database
from edge_agent.protocol import b64
from edge_agent.protocol import keys
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from edge_agent.protocol import totp
from tests.central import conftest


def current_slot() -> int:
    return slots.slot_of(int(time.time() * 1000), conftest.SLOT_S)


async def slot_with_time_left(seconds: float = 8) -> int:
    """Wait until the current slot has `seconds` left, so a test's requests share one slot."""

    async def ready() -> int | None:
        now = int(time.time() * 1000)
        slot = slots.slot_of(now, conftest.SLOT_S)
        return slot if slots.slot_end_ms(slot, conftest.SLOT_S) - now >= seconds * 1000 else None

    return typing.cast(int, await conftest.poll(ready, conftest.SLOT_S, "a fresh slot"))


def url(
    central: conftest.Central,
    device: conftest.ScriptedDevice,
    slot: int,
    key: keys.SigningKey | None = None,
) -> str:
    return qrtoken.url(central.url, device.site, device.device, slot, device.token(slot, key))


async def test_token_paths(enrolled: tuple) -> None:
    central, device = enrolled
    await central.add_student("s1", "1234")
    await central.add_student("s2", "5678")
    slot = await slot_with_time_left()

    status, body = await central.request(
        "POST",
        "/api/v1/checkins",
        {"token": url(central, device, slot), "student_id": "s1", "pin": "1234"},
    )
    assert status == 201, body
    assert body["checkin"]["room"] == central.room and body["checkin"]["method"] == "qr"
    credential = body["credential"]

    status, body = await central.request(
        "POST", "/api/v1/checkins", {"token": url(central, device, slot), "credential": credential}
    )
    assert status == 409 and body["error"]["code"] == "duplicate"
    assert body["error"]["request_id"]

    # The previous slot is still accepted (the screen just changed), two slots back is not.
    status, body = await central.request(
        "POST",
        "/api/v1/checkins",
        {"token": qrtoken.parse(url(central, device, slot - 1)).path, "credential": credential},
    )
    assert status == 201, body
    status, body = await central.request(
        "POST",
        "/api/v1/checkins",
        {"token": url(central, device, slot - 2), "student_id": "s2", "pin": "5678"},
    )
    assert status == 410 and body["error"]["code"] == "stale_token"
    status, body = await central.request(
        "POST",
        "/api/v1/checkins",
        {"token": url(central, device, slot + 5), "student_id": "s2", "pin": "5678"},
    )
    assert status == 403 and body["error"]["code"] == "future_token"
    status, body = await central.request(
        "POST",
        "/api/v1/checkins",
        {
            "token": url(central, device, slot, keys.SigningKey.generate()),
            "student_id": "s2",
            "pin": "5678",
        },
    )
    assert status == 403 and body["error"]["code"] == "forged_token"
    for student, pin in (("s2", "0000"), ("nobody", "5678")):
        status, body = await central.request(
            "POST",
            "/api/v1/checkins",
            {"token": url(central, device, slot), "student_id": student, "pin": pin},
        )
        assert status == 401 and body["error"]["code"] == "bad_credentials"
    status, body = await central.request(
        "POST",
        "/api/v1/checkins",
        {"token": "https://evil.example/x", "student_id": "s2", "pin": "5678"},
    )
    assert status == 400 and body["error"]["code"] == "invalid_token"

    # The credential also works as the HttpOnly cookie, and stops working once revoked.
    await central.http.post(
        central.url + "/api/v1/checkins",
        json={"token": url(central, device, slot), "student_id": "s2", "pin": "5678"},
    )
    cookie = central.http.cookie_jar.filter_cookies(yarl.URL(central.url)).get("roomproof_student")
    assert cookie is not None
    (credential_id,) = await typing.cast(database.Database, central.db).engine.read(
        lambda conn: conn.exec_driver_sql(
            "SELECT id FROM credentials WHERE student_id = 's2'"
        ).one()
    )
    await central.db.revoke_credential(credential_id)
    status, body = await central.request(
        "POST", "/api/v1/checkins", {"token": url(central, device, slot - 1)}
    )
    assert status == 401 and body["error"]["code"] == "bad_credentials"

    status, body = await central.request(
        "GET", "/api/v1/checkins?site=" + central.site, token=central.admin_token
    )
    assert status == 200
    assert sorted((c["student_id"], c["slot"]) for c in body["checkins"]) == [
        ("s1", slot - 1),
        ("s1", slot),
        ("s2", slot),
    ]


async def test_one_time_code_and_rate_limit(enrolled: tuple) -> None:
    central, device = enrolled
    await central.add_student("s3", "2468")
    _, central_keys = await central.request("GET", "/api/v1/keys")
    key = totp.derive_key(
        device.agreement, b64.decode(central_keys["x25519"]), device.site, device.device
    )
    code = totp.totp(key, time.time(), 30)
    body = {
        "site": central.site,
        "room": central.room,
        "otp": code,
        "student_id": "s3",
        "pin": "2468",
    }
    status, result = await central.request("POST", "/api/v1/checkins", body)
    assert status == 201 and result["checkin"]["method"] == "otp", result
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    statuses = []
    for _ in range(4):
        status, result = await central.request(
            "POST",
            "/api/v1/checkins",
            {
                **body,
                "otp": wrong,
                "credential": result.get("credential") if isinstance(result, dict) else None,
            },
        )
        statuses.append((status, result["error"]["code"]))
    assert statuses[0] == (403, "wrong_code")
    assert (429, "rate_limited") in statuses
    async with central.http.post(
        central.url + "/api/v1/checkins", json={**body, "otp": wrong}
    ) as r:
        assert r.status == 429
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert (await r.json())["error"]["details"]["retry_after_s"] == int(
            r.headers["Retry-After"]
        )


async def test_admin_api_authz_and_errors(central: conftest.Central) -> None:
    for token in (None, "rp_not-a-real-token"):
        status, body = await central.request("GET", "/api/v1/devices", token=token)
        assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await central.request("GET", "/api/v1/proofs", token=central.admin_token)
    assert status == 400 and body["error"]["details"]["field"] == "device"
    status, body = await central.request(
        "GET", "/api/v1/proofs?device=x&limit=5000", token=central.admin_token
    )
    assert status == 400 and body["error"]["details"]["field"] == "limit"
    status, body = await central.request(
        "GET", "/api/v1/checkins?since=yesterday", token=central.admin_token
    )
    assert status == 400
    status, body = await central.request("GET", "/api/v1/nothing-here")
    assert status == 404 and body["error"]["code"] == "not_found"
    async with central.http.post(
        central.url + "/api/v1/checkins",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_json"
    async with central.http.post(
        central.url + "/api/v1/checkins",
        data=b'{"token": "' + b"a" * 20000 + b'"}',
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "payload_too_large"
    # Cross-site: a form from another site, or a script whose Origin is not central's.
    async with central.http.post(
        central.url + "/api/v1/checkins", data={"token": "x", "student_id": "s1", "pin": "1"}
    ) as response:
        assert response.status == 415
    status, body = await central.request(
        "POST",
        "/api/v1/checkins",
        {"token": "x", "student_id": "s1", "pin": "1234"},
        headers={"Origin": "https://evil.example"},
    )
    assert status == 403 and body["error"]["code"] == "cross_site"
    status, body = await central.request(
        "POST",
        "/api/v1/checkins",
        {"token": "x", "student_id": "s1", "pin": "1234"},
        headers={"Origin": central.url},
    )
    assert status == 400 and body["error"]["code"] == "invalid_token"  # past the guard
    status, body = await central.request("POST", "/api/v1/checkins", {"token": 5})
    assert status == 400 and body["error"]["details"]["field"] == "token"
    status, body = await central.request("POST", "/api/v1/checkins", {"token": "x", "evil": 1})
    assert status == 400 and body["error"]["details"]["fields"] == ["evil"]


async def test_event_stream_shows_check_in(enrolled: tuple) -> None:
    central, device = enrolled
    await central.add_student("s4", "1357")
    headers = {"Authorization": f"Bearer {central.admin_token}"}
    async with (
        aiohttp.ClientSession() as stream_session,
        stream_session.get(central.url + "/api/v1/events", headers=headers) as stream,
    ):
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert (await stream.content.readline()).startswith(b": connected")
        status, _ = await central.request(
            "POST",
            "/api/v1/checkins",
            {"token": url(central, device, current_slot()), "student_id": "s4", "pin": "1357"},
        )
        assert status == 201
        event: dict[str, str] = {}
        async with asyncio.timeout(5):
            while "data" not in event:
                line = (await stream.content.readline()).decode().rstrip("\n")
                if line.startswith(("event:", "data:")):
                    name, _, value = line.partition(": ")
                    event[name.rstrip(":")] = value
        assert event["event"] == "checkin"
        assert json.loads(event["data"])["student_id"] == "s4"


async def test_check_in_page_escapes_the_url(enrolled: tuple) -> None:
    central, device = enrolled
    good = qrtoken.parse(url(central, device, current_slot())).path
    async with central.http.get(central.url + good) as response:
        page = await response.text()
        assert response.status == 200 and "Hall A-101" in page
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    evil = "/c/%3Cscript%3Ealert(1)%3C%2Fscript%3E/x/1.abc"
    async with central.http.get(central.url + evil) as response:
        page = await response.text()
        assert response.status == 200
        assert "<script>alert(1)" not in page and "</script>alert" not in page
        assert '"valid": false' in page


async def test_pages_say_what_is_recorded(enrolled: tuple) -> None:
    central, device = enrolled
    good = qrtoken.parse(url(central, device, current_slot())).path
    for path in (good, "/otp"):
        async with central.http.get(central.url + path) as response:
            page = await response.text()
        assert response.status == 200
        assert "What is recorded" in page and "random id this browser keeps" in page
        assert "We do not track your location" in page


async def test_a_sha256_device_checks_in_with_its_code(enrolled: tuple) -> None:
    """The digest a device signs in its proofs (`otp_digest`; absent: sha1) is the one central
    checks its code with: a device set to sha256 checks in with its 6-digit code."""
    central, device = enrolled
    for student in ("s4", "s5", "s6"):
        await central.add_student(student, "2468")
    _, central_keys = await central.request("GET", "/api/v1/keys")
    key = totp.derive_key(
        device.agreement, b64.decode(central_keys["x25519"]), device.site, device.device
    )
    await central.publish(device.topic("proof"), device.next_proof(otp_digest="sha256"))

    async def digest_is(expected: str) -> bool:
        found = await central.db.get_device(central.site, device.device)
        return found is not None and found.otp_digest == expected

    await conftest.poll(lambda: digest_is("sha256"), 10, "the sha256 proof at central")
    now = time.time()
    sha256 = totp.totp(key, now, 30, digest="sha256")
    reference = pyotp.TOTP(base64.b32encode(key).decode(), digest=hashlib.sha256).at(int(now))
    assert sha256 == reference
    sha1 = totp.totp(key, now, 30)
    body = {"site": central.site, "room": central.room, "student_id": "s4", "pin": "2468"}
    if sha1 not in {totp.totp(key, now + d, 30, digest="sha256") for d in (-30, 0, 30)}:
        status, result = await central.request("POST", "/api/v1/checkins", {**body, "otp": sha1})
        assert (status, result["error"]["code"]) == (403, "wrong_code"), result
    status, result = await central.request(
        "POST", "/api/v1/checkins", {**body, "student_id": "s5", "otp": sha256}
    )
    assert status == 201 and result["checkin"]["method"] == "otp", result
    _, listed = await central.request("GET", "/api/v1/devices", token=central.admin_token)
    assert [d["otp_digest"] for d in listed["devices"]] == ["sha256"]

    # A proof without the claim (sha1, as before) switches central back.
    await central.publish(device.topic("proof"), device.next_proof())
    await conftest.poll(lambda: digest_is("sha1"), 10, "the sha1 proof at central")
    code = totp.totp(key, time.time(), 30)
    status, result = await central.request(
        "POST", "/api/v1/checkins", {**body, "student_id": "s6", "otp": code}
    )
    assert status == 201, result
