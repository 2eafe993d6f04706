"""Student credentials against guessing (issue 13, F2, F3, F8, F9, F10), over real HTTP.

Each test drives the in-process central with a settable clock and a scripted device whose
proofs follow that clock; clients are told apart by X-Forwarded-For (loopback is a trusted
proxy here), as a campus reverse proxy reports them.
"""

from __future__ import annotations

import asyncio
import collections.abc
import pathlib
import typing

import aiohttp
import pytest

from central.core import clock as clock_mod
from central.domain import policy
from edge_agent.protocol import b64
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from edge_agent.protocol import totp
from tests.central import conftest
from tests.central import test_import_export
from tests.central import test_sessions

PIN = "246810"
STUDENTS = ("s1", "s2", "s3", "s4")
BROWSER = "a-phone-that-opened-the-page"
PROXIED = {"trusted_proxies": ["127.0.0.1/32"]}


@pytest.fixture()
def clock() -> clock_mod.SettableClock:
    return clock_mod.SettableClock(test_sessions.START)


@pytest.fixture()
async def room(
    central: conftest.Central, clock: clock_mod.SettableClock
) -> collections.abc.AsyncIterator[test_sessions.Week]:
    device, code = await central.add_device("pi-pins", now_ms=clock.now_ms())
    await central.enroll(device, code)
    for student in STUDENTS:
        await central.add_student(student, PIN)
    handle = test_sessions.Week(central, clock, device)
    await handle.at(test_sessions.START)
    yield handle
    await handle.close()


def token(room: test_sessions.Week) -> str:
    slot = slots.slot_of(room.clock.now_ms(), conftest.SLOT_S)
    device = room.device
    return qrtoken.url(room.central.url, device.site, device.device, slot, device.token(slot))


async def otp(room: test_sessions.Week) -> str:
    _, keys = await room.central.request("GET", "/api/v1/keys")
    key = totp.derive_key(
        room.device.agreement, b64.decode(keys["x25519"]), room.device.site, room.device.device
    )
    return totp.totp(key, room.clock.now_ms() / 1000, 30)


class Answer(typing.NamedTuple):
    status: int
    body: typing.Any
    retry_after: str | None

    @property
    def error(self) -> tuple[int, str, str]:
        """What a client can tell answers apart by (the request id aside)."""
        return self.status, self.body["error"]["code"], self.body["error"]["message"]


async def send(
    room: test_sessions.Week,
    body: dict[str, typing.Any],
    client: str,
    path: str = "/api/v1/checkins",
    browser: str | None = BROWSER,
    cookies: dict[str, str] | None = None,
) -> Answer:
    jar = aiohttp.CookieJar(unsafe=True)
    if browser is not None:
        jar.update_cookies({"roomproof_browser": browser})
    jar.update_cookies(cookies or {})
    async with (
        aiohttp.ClientSession(cookie_jar=jar) as http,
        http.post(
            room.central.url + path, json=body, headers={"X-Forwarded-For": client}
        ) as response,
    ):
        return Answer(response.status, await response.json(), response.headers.get("Retry-After"))


def by_pin(room: test_sessions.Week, student: str, pin: str = PIN) -> dict[str, typing.Any]:
    return {"token": token(room), "student_id": student, "pin": pin}


async def audit(central: conftest.Central, action: str) -> list[dict[str, typing.Any]]:
    status, body = await central.request("GET", "/api/v1/audit", token=central.admin_token)
    assert status == 200, body
    return [entry for entry in body["audit"] if entry["action"] == action]


# -- F2: the token or code first, then the PIN; wrong PIN == unknown student --------------
@pytest.mark.parametrize("central_overrides", [PROXIED], ids=["proxied"])
async def test_the_code_is_judged_before_the_pin(room: test_sessions.Week) -> None:
    central = room.central
    code = await otp(room)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    base = {"site": central.site, "room": central.room}
    for pin in (PIN, "000000"):  # the answer to a wrong code never depends on the PIN
        answer = await send(
            room, {**base, "otp": wrong, "student_id": "s1", "pin": pin}, "10.1.0.1"
        )
        assert answer.error[:2] == (403, "wrong_code"), answer
        answer = await send(
            room,
            {**base, "otp": wrong, "student_id": "s2", "pin": pin},
            "10.1.0.2",
            path="/api/v1/checkouts",
        )
        assert answer.error[:2] == (403, "wrong_code"), answer
    wrong_pin = await send(
        room, {**base, "otp": code, "student_id": "s3", "pin": "000000"}, "10.1.0.3"
    )
    unknown = await send(
        room, {**base, "otp": code, "student_id": "nobody", "pin": PIN}, "10.1.0.4"
    )
    assert wrong_pin.error == unknown.error == (401, "bad_credentials", unknown.error[2])
    by_token = await send(room, by_pin(room, "s4", "000000"), "10.1.0.5")
    assert by_token.error == unknown.error
    assert (
        await send(room, {**base, "otp": code, "student_id": "s3", "pin": PIN}, "10.1.0.6")
    ).status == 201


@pytest.mark.parametrize(
    "central_overrides",
    [{**PROXIED, "pin_failures_before_backoff": 2, "pin_backoff_s": 30}],
    ids=["backoff"],
)
async def test_wrong_pins_back_off_per_student_and_are_audited(room: test_sessions.Week) -> None:
    central = room.central
    clients = iter(f"10.2.0.{n}" for n in range(1, 200))  # per student, whatever the client
    for student in ("s1", "nobody"):  # an unknown id is treated exactly like a known one
        for _ in range(2):
            answer = await send(room, by_pin(room, student, "000000"), next(clients))
            assert answer.error[:2] == (401, "bad_credentials"), answer
    locked = await send(room, by_pin(room, "s1"), next(clients))  # even the right PIN now
    ghost = await send(room, by_pin(room, "nobody", "000000"), next(clients))
    assert locked.error == ghost.error and locked.error[:2] == (429, "rate_limited")
    assert locked.retry_after == ghost.retry_after == "30"
    assert (await send(room, by_pin(room, "s2"), next(clients))).status == 201  # others: free
    entries = await audit(central, "student_pin_locked")
    assert {e["target"] for e in entries} == {f"{central.site}/s1", f"{central.site}/nobody"}
    assert "2 wrong PINs" in entries[0]["detail"]

    # After the wait one more try; a wrong one doubles the wait.
    await room.at(test_sessions.START + 31_000)
    assert (await send(room, by_pin(room, "s1", "111111"), next(clients))).status == 401
    doubled = await send(room, by_pin(room, "s1"), next(clients))
    assert doubled.status == 429 and doubled.retry_after == "60"
    assert len(await audit(central, "student_pin_locked")) == 3
    await room.at(test_sessions.START + 92_000)
    assert (await send(room, by_pin(room, "s1"), next(clients))).status == 201
    # A correct PIN forgets the failures: one wrong PIN is again just a wrong PIN.
    assert (await send(room, by_pin(room, "s1", "111111"), next(clients))).status == 401
    assert (await send(room, by_pin(room, "s1", "111111"), next(clients))).status == 401


@pytest.mark.parametrize(
    "central_overrides",
    [{**PROXIED, "pin_failures_per_client_per_minute": 3}],
    ids=["per-client"],
)
async def test_wrong_pins_are_limited_per_client(room: test_sessions.Week) -> None:
    for student in ("s1", "s2", "s3"):  # one guess each: no student is locked
        answer = await send(room, by_pin(room, student, "000000"), "10.3.0.1")
        assert answer.status == 401, answer
    refused = await send(room, by_pin(room, "s4"), "10.3.0.1")
    assert refused.error[:2] == (429, "rate_limited") and refused.retry_after is not None
    assert 1 <= int(refused.retry_after) <= 60
    assert (await send(room, by_pin(room, "s4"), "10.3.0.2")).status == 201


@pytest.mark.parametrize(
    "central_overrides",
    [{**PROXIED, "checkin_requests_per_client_per_minute": 5}],
    ids=["limited"],
)
async def test_check_outs_have_a_per_client_limit(room: test_sessions.Week) -> None:
    answers = [
        await send(room, by_pin(room, "s1", "000000"), "10.4.0.1", path="/api/v1/checkouts")
        for _ in range(6)
    ]
    assert answers[5].error[:2] == (429, "rate_limited")
    assert answers[5].retry_after is not None and 1 <= int(answers[5].retry_after) <= 60
    # No check-out session runs: 409 before any PIN is verified.
    assert [a.status for a in answers[:5]] == [409] * 5
    other = await send(room, by_pin(room, "s1"), "10.4.0.2", path="/api/v1/checkouts")
    assert other.status == 409


@pytest.mark.parametrize("central_overrides", [{"pin_min_length": 8}], ids=["min-8"])
async def test_new_pins_are_long_enough_and_old_ones_keep_working(
    room: test_sessions.Week,
) -> None:
    central = room.central
    rows = f"site,student_id,pin\n{central.site},n1,1234\n{central.site},n2,123456\n"
    status, body = await central.request(
        "POST",
        "/api/v1/imports/students",
        token=central.admin_token,
        data=rows.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert status == 200 and not body["applied"], body
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(2, "pin"), (3, "pin")]
    assert "8 to 64 characters" in body["errors"][0]["message"]
    await central.add_student("old", "4711")  # set before the rule: still accepted
    assert (await send(room, by_pin(room, "old", "4711"), "10.5.0.1")).status == 201


# -- F3: Argon2 under a bounded pool; a flood answers 429, a genuine check-in completes -----
@pytest.mark.parametrize(
    "central_overrides",
    [
        {
            **PROXIED,
            "pin_verify_concurrency": 1,
            "pin_verify_queue": 2,
            "pin_failures_before_backoff": 100,
            "pin_failures_per_client_per_minute": 1000,
        }
    ],
    ids=["small-pool"],
)
async def test_a_wrong_pin_flood_is_refused_and_a_genuine_check_in_completes(
    room: test_sessions.Week,
) -> None:
    flood = [
        asyncio.create_task(send(room, by_pin(room, "s1", f"{n:06d}"), "10.6.0.1"))
        for n in range(24)
    ]
    await asyncio.sleep(0.05)  # the flood is in
    genuine = await send(room, by_pin(room, "s2"), "10.6.0.2")
    answers = await asyncio.gather(*flood)
    assert genuine.status == 201, genuine
    refused = [a for a in answers if a.status == 429]
    assert refused and all(a.error[1] == "rate_limited" and a.retry_after for a in refused)
    assert {a.status for a in answers} <= {401, 429}
    # Nothing stays taken: once the flood is over, the pool admits again.
    assert (await send(room, by_pin(room, "s3"), "10.6.0.1")).status == 201


# -- F8: a dry run never verifies PINs; imports that set PINs are audited ------------------
async def test_a_dry_run_does_not_verify_pins_and_is_audited(room: test_sessions.Week) -> None:
    central = room.central
    site = central.site
    rows = f"site,student_id,pin\n{site},s1,{PIN}\n{site},s2,999999\n{site},s9,135790\n"

    async def dry_run(text: str) -> dict[str, typing.Any]:
        status, body = await central.request(
            "POST",
            "/api/v1/imports/students?dry_run=true",
            token=central.admin_token,
            data=text.encode(),
            headers={"Content-Type": "text/csv"},
        )
        assert status == 200 and not body["errors"], body
        return typing.cast(dict[str, typing.Any], body)

    body = await dry_run(rows)
    # s1's PIN is right, s2's is not: the dry run cannot tell them apart.
    assert (body["created"], body["updated"], body["unchanged"]) == (1, 0, 0)
    assert body["pin_will_be_set"] == 2 and body["pins"] == 3
    entries = await audit(central, "import_students")
    assert len(entries) == 1 and "dry run" in entries[0]["detail"]
    assert "PIN will be set for 2" in entries[0]["detail"]
    assert not await central.db.get_student(site, "s9")  # a dry run writes no student


# -- F9: a PIN change revokes the remembered browsers --------------------------------------
async def test_a_new_pin_revokes_remembered_browsers(room: test_sessions.Week) -> None:
    central = room.central
    first = await send(room, by_pin(room, "s1"), "10.8.0.1")
    assert first.status == 201 and first.body["credential"]
    remembered = {"roomproof_student": first.body["credential"]}
    await room.at(test_sessions.START + conftest.SLOT_S * 1000)  # a new code on the screen
    again = await send(room, {"token": token(room)}, "10.8.0.1", cookies=remembered)
    assert again.status == 201, again  # one tap while the PIN stands
    status, body = await central.request(
        "POST",
        "/api/v1/imports/students",
        token=central.admin_token,
        data=f"site,student_id,pin\n{central.site},s1,864200\n".encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert status == 200 and body["updated"] == 1, body
    await room.at(test_sessions.START + 2 * conftest.SLOT_S * 1000)
    revoked = await send(room, {"token": token(room)}, "10.8.0.1", cookies=remembered)
    assert revoked.error[:2] == (401, "bad_credentials"), revoked
    assert (await send(room, by_pin(room, "s1", "864200"), "10.8.0.1")).status == 201


async def test_the_cli_sets_pins_by_the_same_rules(
    room: test_sessions.Week, tmp_path: pathlib.Path
) -> None:
    """`student add` / `student set-pin` refuse short PINs; set-pin revokes the remembered
    browsers and is audited; a dry-run `import` says "PIN will be set" and is audited."""
    central = room.central
    cli = test_import_export.cli
    config = ("--config", test_import_export.config_for(central, tmp_path), "--site", central.site)
    code, _, err = await cli("student", "add", *config, "--student-id", "n1", "--pin", "1234")
    assert code == 1 and "6 to 64 characters" in err, err
    first = await send(room, by_pin(room, "s1"), "10.10.0.1")
    remembered = {"roomproof_student": first.body["credential"]}
    code, out, err = await cli(
        "student", "set-pin", *config, "--student-id", "s1", "--pin", "975310"
    )
    assert code == 0 and "revoked" in out, err
    await room.at(test_sessions.START + conftest.SLOT_S * 1000)
    revoked = await send(room, {"token": token(room)}, "10.10.0.1", cookies=remembered)
    assert revoked.error[:2] == (401, "bad_credentials"), revoked
    assert [e["target"] for e in await audit(central, "student_pin_set")] == [f"{central.site}/s1"]
    code, _, err = await cli(
        "student", "set-pin", *config, "--student-id", "ghost", "--pin", "975310"
    )
    assert code == 1 and "does not exist" in err

    rows = tmp_path / "students.csv"
    rows.write_text(f"site,student_id,pin\n{central.site},s1,975310\n")
    code, out, err = await cli("import", "students", str(rows), "--dry-run", *config[:2])
    assert code == 0 and "PIN will be set for 1" in out, (out, err)
    (entry,) = await audit(central, "import_students")
    assert entry["actor"].startswith("cli:") and "dry run" in entry["detail"]


# -- F10: relay and shared-phone evidence --------------------------------------------------
@pytest.mark.parametrize(
    "central_overrides",
    [{**PROXIED, "campus_networks": {"main": ["10.0.0.0/8"]}}],
    ids=["campus"],
)
async def test_no_browser_id_and_off_campus_are_flagged(room: test_sessions.Week) -> None:
    central = room.central
    plain = await send(room, by_pin(room, "s1"), "10.9.0.1")
    assert plain.status == 201 and plain.body["checkin"]["status"] == "present", plain
    assert plain.body["checkin"]["evidence"]["no_browser_id"] is False
    relay = await send(room, by_pin(room, "s2"), "10.9.0.2", browser=None)
    assert relay.status == 201 and relay.body["checkin"]["status"] == "flagged"
    assert relay.body["checkin"]["flags"] == [policy.NO_BROWSER_ID]
    assert relay.body["checkin"]["evidence"]["no_browser_id"] is True
    away = await send(  # flag_off_campus is not set: on by default
        room, by_pin(room, "s3"), "203.0.113.7", browser="another-phone-off-campus"
    )
    assert away.body["checkin"]["flags"] == ["client network is not a campus network"]

    # The check-in page gives a browser its id before the student submits.
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as phone,
        phone.get(token(room)) as page,
    ):
        assert page.status == 200
        given = page.cookies["roomproof_browser"]
        assert given["httponly"] and given["samesite"] == "Strict"
        async with phone.post(
            central.url + "/api/v1/checkins",
            json=by_pin(room, "s4"),
            headers={"X-Forwarded-For": "10.9.0.4"},
        ) as response:
            body = await response.json()
        assert response.status == 201 and body["checkin"]["status"] == "present", body
