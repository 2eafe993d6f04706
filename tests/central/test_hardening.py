"""Issue 13's hardening findings against a real central (real port, SQLite, real receivers):

- F4: a revoked token's open event streams end (revoked through the API, or by
  `central token revoke` in another process on the same database); a token's 9th concurrent
  stream gets 429.
- F5: webhook URLs on internal addresses are refused at registration, and deliveries to them
  are refused once they are no longer allowlisted; the delivery log holds a status or a short
  error class, never what the remote end sent.
- F11: numeric parameters take ASCII digits within bounds; anything else is a 400, never a 500.
- F12: the database (with its -wal/-shm) and the keys are 0600 in a 0755 data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import pathlib
import sqlite3
import sys
import time
import typing
import urllib.parse

import aiohttp
import hypothesis
import pytest
from aiohttp import test_utils
from aiohttp import web
from hypothesis import strategies as st

from central.core import clock as clock_mod
from central.core import errors
from central.core import events
from central.core import keyring
from central.core import params
from central.http import auth
from central.http import streams
from central.http import webhooks
from central.storage import database
from central.storage import store
from tests.central import conftest
from tests.central import test_webhooks
from tests.stores import pg


@pytest.fixture(params=["sqlite", "postgres"])
async def central_overrides(
    request: pytest.FixtureRequest,
) -> typing.AsyncIterator[dict[str, typing.Any]]:
    """The `central` fixture of this module runs on both stores."""
    if request.param == "sqlite":
        yield {}
        return
    async with pg.fresh_database() as dsn:
        yield {"database_url": dsn}


async def new_token(central: conftest.Central, role: str = "admin") -> tuple[str, str]:
    """Another token of `role` on the fixture's site and its id: the one place to adapt when
    tokens change shape."""
    token = auth.new_token()
    await central.db.add_admin_token(
        auth.token_hash(token), role, f"hardening-{role}", 0, site=central.site
    )
    return token, auth.token_hash(token)[: store.TOKEN_ID_CHARS]


# -- F4: event streams end with their token --------------------------------------------------
@contextlib.asynccontextmanager
async def event_stream(
    central: conftest.Central, token: str
) -> typing.AsyncIterator[aiohttp.ClientResponse]:
    """An open /api/v1/events stream (its ": connected" line read)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(
            central.url + "/api/v1/events", headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status == 200, await response.text()
            assert await response.content.readline() == b": connected\n"
            yield response


async def ended(response: aiohttp.ClientResponse, within_s: float) -> float:
    """Reads the stream to its end; the seconds it took (the test fails if it is still open
    after within_s, far more than the 1 s promised: the keep-alive alone comes every 15 s)."""
    started = time.monotonic()
    async with asyncio.timeout(within_s):
        while await response.content.read(4096):
            pass
    return time.monotonic() - started


async def test_stream_ends_when_its_token_is_revoked_through_the_api(
    central: conftest.Central,
) -> None:
    token, token_id = await new_token(central)
    other, _ = await new_token(central)
    async with event_stream(central, token) as doomed, event_stream(central, other) as kept:
        status, body = await central.request(
            "DELETE", f"/api/v1/tokens/{token_id}", token=central.admin_token
        )
        assert status == 200, body
        took = await ended(doomed, 5)
        logging.getLogger(__name__).info("stream ended %.3f s after the revocation", took)
        assert not kept.content.at_eof()  # another token's stream stays open
        status, body = await central.request("GET", "/api/v1/events", token=token)
        assert status == 401


async def test_stream_ends_when_the_cli_revokes_its_token(
    central: conftest.Central, tmp_path: pathlib.Path
) -> None:
    """`central token revoke` runs in its own process against the same database."""
    token, token_id = await new_token(central)
    config = tmp_path / "cli.toml"
    lines = [f'data_dir = "{central.settings.data_dir}"']
    if central.settings.database_url:
        lines.append(f'database_url = "{central.settings.database_url}"')
    config.write_text("\n".join(lines) + "\n")
    async with event_stream(central, token) as doomed:
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "central",
            "token",
            "revoke",
            token_id,
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await cli.communicate()
        assert cli.returncode == 0, err.decode()
        assert f"token {token_id} revoked" in out.decode()
        took = await ended(doomed, 5)
        logging.getLogger(__name__).info("stream ended %.3f s after the CLI's revocation", took)


async def test_ninth_stream_of_a_token_gets_429(central: conftest.Central) -> None:
    """event_streams_per_token is 8 by default."""
    token, _ = await new_token(central)
    other, _ = await new_token(central)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(event_stream(central, token))
        for _ in range(7):
            await stack.enter_async_context(event_stream(central, token))
        async with aiohttp.ClientSession() as http:
            async with http.get(
                central.url + "/api/v1/events", headers={"Authorization": f"Bearer {token}"}
            ) as response:
                assert response.status == 429
                assert int(response.headers["Retry-After"]) >= 1
                body = await response.json()
        assert body["error"]["code"] == "too_many_streams"
        assert set(body["error"]) == {"code", "message", "details", "request_id"}
        async with event_stream(central, other):  # the limit is per token
            pass
        first.close()  # a client goes away: its place is free again soon

        async def opens() -> bool:
            async with aiohttp.ClientSession() as http:
                async with http.get(
                    central.url + "/api/v1/events", headers={"Authorization": f"Bearer {token}"}
                ) as response:
                    return response.status == 200

        await conftest.poll(opens, 10, "a place for the token's next stream")


async def test_streams_registry_recheck_failure_ends_only_that_token() -> None:
    """The registry alone: a token whose check fails loses all its streams; a store hiccup
    (any other exception) ends nothing."""
    hub = events.Hub()
    registry = streams.Streams(hub, limit=3, recheck_s=0.01)
    revoked = asyncio.Event()

    async def check_a() -> None:
        if revoked.is_set():
            raise errors.ApiError(401, "unauthorized", "unknown or revoked token")

    async def check_b() -> None:
        raise OSError("database is locked")

    request = test_utils.make_mocked_request("GET", "/api/v1/events")
    a = [registry.open(request, "a", check_a) for _ in range(2)]
    b = [registry.open(request, "b", check_b) for _ in range(3)]
    with pytest.raises(errors.ApiError) as refused:
        registry.open(request, "b", check_b)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"]
    assert registry.count("b") == 3 and hub.size == 5
    hub.publish("proof", {"n": 1})
    revoked.set()

    async def a_ended() -> bool:
        return hub.size == 3

    await conftest.poll(a_ended, 5, "the revoked token's streams to end")
    for stream in a:
        assert stream.queue.get_nowait() is None  # what was queued went: None is all
    for stream in b:  # b's streams go on
        assert stream.queue.get_nowait() == ("proof", {"n": 1})
    for stream in [*a, *b]:
        await stream.close()
    assert registry.count("a") == registry.count("b") == 0 and hub.size == 0


# -- F5: webhooks reach only the outside world -----------------------------------------------
INTERNAL_URLS = [
    "http://127.0.0.1/hook",
    "http://127.0.0.1:8080/hook",
    "http://127.1/hook",
    "http://0x7f000001/hook",
    "http://2130706433/hook",
    "http://017700000001/hook",
    "http://0.0.0.0/hook",
    "http://0/hook",
    "http://localhost:8080/hook",
    "http://LOCALHOST./hook",
    "http://admin.localhost/hook",
    "http://[::1]/hook",
    "http://[::]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:a00:1]/hook",
    "http://[2002:7f00:1::]/hook",
    "http://[64:ff9b::a9fe:a9fe]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://192.0.0.192/opc/v2/instance/",
    "http://10.0.0.1/hook",
    "http://172.16.5.4/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",
    "http://[fc00::1]/hook",
    "http://[fe80::1]/hook",
    "http://[fec0::1]/hook",
    "http://224.0.0.1/hook",
    "http://239.255.255.250/hook",
    "http://[ff02::1]/hook",
    "http://240.0.0.1/hook",
    "http://255.255.255.255/hook",
    "http://198.18.0.1/hook",
    "https://192.0.2.10/hook",
]


async def test_internal_urls_are_refused_at_registration(central: conftest.Central) -> None:
    for url in INTERNAL_URLS:
        status, reply = await central.request(
            "POST",
            "/api/v1/webhooks",
            {"url": url, "events": ["checkin"]},
            token=central.admin_token,
        )
        assert status == 400, (url, reply)
        assert reply["error"]["code"] == "invalid_request", url
        assert reply["error"]["details"]["field"] == "url", url
        assert "internal address" in reply["error"]["message"], url
    for url in ("http://[fe80::1%25eth0]/hook", "http://[::1%lo]/hook"):
        status, reply = await central.request(
            "POST", "/api/v1/webhooks", {"url": url, "events": ["checkin"]}, central.admin_token
        )
        assert status == 400 and reply["error"]["details"]["field"] == "url", url
    status, reply = await central.request("GET", "/api/v1/webhooks", token=central.admin_token)
    assert status == 200 and reply["webhooks"] == []
    # Global addresses, and names that do not resolve yet (checked again at each delivery).
    for url in ("https://8.8.8.8/hook", "https://[2606:4700::1111]/hook", "https://crm.example/"):
        status, reply = await central.request(
            "POST", "/api/v1/webhooks", {"url": url, "events": ["checkin"]}, central.admin_token
        )
        assert status == 201, (url, reply)


def test_address_classes_follow_the_stdlib_plus_cgnat_and_metadata() -> None:
    guard = webhooks.Guard()
    for url in INTERNAL_URLS:
        with pytest.raises(webhooks.Blocked):
            assert guard.check_literal(url)
    assert guard.check_literal("https://8.8.8.8/x")
    assert not guard.check_literal("https://crm.example/x")  # a name: the resolver checks it
    allowed = webhooks.Guard(allow_networks=(ipaddress.ip_network("10.1.0.0/16"),))
    assert allowed.check_literal("http://10.1.2.3/x")
    with pytest.raises(webhooks.Blocked):
        allowed.check_literal("http://10.2.0.1/x")
    named = webhooks.Guard(allow_hosts=frozenset({"localhost"}))
    assert not named.check_literal("http://LOCALHOST/x")


@pytest.fixture()
def hook_clock() -> clock_mod.SettableClock:
    return clock_mod.SettableClock(test_webhooks.local("08:00"))


async def test_delivery_is_refused_once_loopback_is_no_longer_allowed(
    tmp_path: pathlib.Path, hook_clock: clock_mod.SettableClock
) -> None:
    """Registered (by name) while the admin allowed it, and delivered to; central restarts
    without the allowlist: the next delivery is blocked before any connection, and the log
    says so."""
    async with test_webhooks.serve_receiver() as receiver:
        central = test_webhooks.Standalone(
            tmp_path,
            None,
            hook_clock,
            webhook_allow_hosts=["localhost"],
            webhook_allow_networks=[],
        )
        await central.prepare()
        try:
            await central.start()
            url = receiver.url.replace("127.0.0.1", "localhost")
            webhook_id = await central.add_webhook(url)
            await central.add_session("08:00", "08:30")
            hook_clock.set(test_webhooks.local("08:31"))

            async def attempted(count: int) -> list[store.WebhookDelivery] | None:
                rows = await central.log(webhook_id)
                return rows if sum(r.attempts for r in rows) == count else None

            first = (await conftest.poll(lambda: attempted(1), 10, "the delivery"))[0]
            assert first.last_status == 200 and len(receiver.seen) == 1
            await central.stop()
            central.settings = central.settings.model_copy(update={"webhook_allow_hosts": []})
            await central.start()
            await central.add_session("09:00", "09:30")
            hook_clock.set(test_webhooks.local("09:31"))
            rows = await conftest.poll(lambda: attempted(2), 10, "the blocked attempt")
            assert len(receiver.seen) == 1  # nothing reached the receiver
            failed = [r for r in rows if r.delivered_at is None]
            assert [(r.last_status, r.last_error) for r in failed] == [(None, "blocked: loopback")]
        finally:
            await central.stop()
            await central.db.close()


async def test_the_resolver_answers_only_checked_addresses() -> None:
    """Deliveries to a host name connect to what this resolver answered: all checked."""
    with pytest.raises(webhooks.Blocked, match="loopback"):
        await webhooks.Guard().resolver().resolve("localhost", 443)
    loopback = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    found = await webhooks.Guard(allow_networks=loopback).resolver().resolve("localhost", 443)
    assert found and all(ipaddress.ip_address(r["host"]).is_loopback for r in found)
    assert all(r["port"] == 443 and r["hostname"] == "localhost" for r in found)


async def test_delivery_log_holds_status_or_error_class_never_remote_text(
    tmp_path: pathlib.Path, hook_clock: clock_mod.SettableClock
) -> None:
    """Three allowlisted loopback receivers: one answers a non-HTTP banner (an SSH port, say),
    one answers 500 with a body, one port is closed. The log says `protocol`, `HTTP 500` and
    `refused`: nothing of the banner, the body or the address."""
    secret = "SSH-2.0-OpenSSH_9.2p1 INTERNAL-BANNER-7731"

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{secret}\r\n".encode())
        await writer.drain()
        writer.close()

    async def error_page(request: web.Request) -> web.Response:
        return web.Response(status=500, reason="INTERNAL-REASON", text=secret)

    banner_server = await asyncio.start_server(banner, "127.0.0.1", 0)
    banner_port = banner_server.sockets[0].getsockname()[1]
    app = web.Application()
    app.router.add_post("/hook", error_page)
    page_server = test_utils.TestServer(app, host="127.0.0.1")
    await page_server.start_server()
    closed_port = conftest.broker_mod.free_port()
    central = test_webhooks.Standalone(
        tmp_path, None, hook_clock, webhook_allow_networks=["127.0.0.1/32"]
    )
    await central.prepare()
    try:
        await central.start()
        ids = {
            "protocol": await central.add_webhook(f"http://127.0.0.1:{banner_port}/hook"),
            "HTTP 500": await central.add_webhook(f"http://127.0.0.1:{page_server.port}/hook"),
            "refused": await central.add_webhook(f"http://127.0.0.1:{closed_port}/hook"),
        }
        await central.add_session("08:00", "08:30")
        hook_clock.set(test_webhooks.local("08:31"))
        for expected, webhook_id in ids.items():

            async def attempted(webhook_id: int = webhook_id) -> store.WebhookDelivery | None:
                rows = await central.log(webhook_id)
                return rows[0] if rows and rows[0].attempts >= 1 else None

            failed = await conftest.poll(attempted, 10, f"the {expected} attempt")
            assert failed.last_error == expected
            assert failed.delivered_at is None
        assert central.client is not None
        for webhook_id in ids.values():
            async with central.client.get(
                f"/api/v1/webhooks/{webhook_id}/deliveries",
                headers={"Authorization": f"Bearer {central.token}"},
            ) as response:
                text = await response.text()
            assert response.status == 200
            assert "INTERNAL" not in text and "OpenSSH" not in text and "127.0.0.1" not in text
    finally:
        await central.stop()
        await central.db.close()
        await page_server.close()
        banner_server.close()
        await banner_server.wait_closed()


# -- F11: numbers are ASCII digits within bounds ---------------------------------------------
async def test_odd_numbers_are_400_never_500(central: conftest.Central) -> None:
    bad = [
        "/api/v1/checkins?since=²",
        "/api/v1/checkins?since=" + "9" * 25,
        "/api/v1/checkins?since=" + "9" * 5000,
        "/api/v1/checkins?since=" + "1" * 16,
        "/api/v1/checkins?since=１７０００００００００００",  # fullwidth digits
        "/api/v1/checkins?since=0001-01-01T00:00:00Z",
        "/api/v1/checkins?since=" + "2027-03-22T08:00:00" + "0" * 80 + "Z",
        "/api/v1/checkins?limit=１０",
        "/api/v1/checkins?limit=+10",
        "/api/v1/checkins?limit= 10",
        "/api/v1/checkins?limit=1_0",
        "/api/v1/checkins?after=٣",
        "/api/v1/checkins?after=" + "9" * 5000,
        "/api/v1/checkins?after=-1",
        "/api/v1/audit?after=" + "9" * 25,
        "/api/v1/sessions/²/attendance?date=2027-03-22",
        "/api/v1/sessions/٣/attendance?date=2027-03-22",
        "/api/v1/sessions/" + "9" * 25 + "/attendance?date=2027-03-22",
        "/api/v1/sessions/" + "9" * 5000 + "/attendance?date=2027-03-22",
        "/api/v1/students/{site}/s1/attendance?from=²",
        "/api/v1/students/{site}/s1/attendance?to=" + "9" * 25,
        "/api/v1/students/{site}/s1/attendance?offset=٣",
        "/api/v1/checkins/²/evidence",
        "/api/v1/webhooks/²/deliveries",
    ]
    await central.add_student("s1", "2468")
    for path in bad:
        path = path.replace("{site}", central.site)
        status, body = await central.request("GET", path, token=central.admin_token)
        assert status == 400, (path[:80], status, body)
        assert set(body["error"]) == {"code", "message", "details", "request_id"}, path[:80]
        assert body["error"]["code"] == "invalid_request", path[:80]
    status, body = await central.request(
        "POST", "/api/v1/alerts/²/clear", {}, token=central.admin_token
    )
    assert status == 400 and body["error"]["details"]["field"] == "id"
    for path in (
        "/api/v1/checkins?since=1700000000000&limit=10&after=0",
        "/api/v1/checkins?since=2027-03-22T08:00:00%2B01:00",
        "/api/v1/checkins?since=253402300799999",
    ):
        status, body = await central.request("GET", path, token=central.admin_token)
        assert status == 200, (path, body)


def _query(key: str, value: str) -> web.Request:
    request = test_utils.make_mocked_request("GET", "/x?" + urllib.parse.urlencode({key: value}))
    assert request.query[key] == value
    return request


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    st.one_of(
        st.text(max_size=30),
        st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=30),
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
    )
)
def test_int_param_takes_ascii_digits_within_bounds_only(raw: str) -> None:
    request = _query("limit", raw)
    try:
        value = params.int_param(request, "limit", 100, 1, 1000)
    except errors.ApiError as exc:
        assert exc.status == 400 and exc.details == {"field": "limit"}
        assert not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 1000)
    else:
        assert raw.isascii() and raw.isdigit() and value == int(raw) and 1 <= value <= 1000
    try:
        moment = params.time_param(_query("since", raw), "since")
    except errors.ApiError as exc:
        assert exc.status == 400 and exc.details == {"field": "since"}
    else:
        assert moment is not None and 0 <= moment <= params.MAX_TIME_MS
        params.iso(moment)  # printable as RFC 3339 again


# -- F12: private files -----------------------------------------------------------------------
@pytest.fixture()
def shared_umask() -> typing.Iterator[None]:
    """The usual umask (files 0644 unless asked otherwise), whatever the test runner's is."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: pathlib.Path) -> int:
    return path.stat().st_mode & 0o777


def _modes(directory: pathlib.Path, prefix: str = "") -> dict[str, int]:
    return {p.name: _mode(p) for p in directory.iterdir() if p.name.startswith(prefix)}


async def test_central_files_are_0600_in_a_0755_data_dir(
    tmp_path: pathlib.Path, shared_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "central"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    with caplog.at_level(logging.WARNING):
        keys = keyring.load(data_dir)
    assert keys.credential_secret
    assert any("open to other users" in r.getMessage() for r in caplog.records)
    assert _mode(data_dir) == 0o755  # warned about, not changed behind the admin's back
    db = database.Database.sqlite(data_dir / "central.db")
    await db.open()
    try:
        await db.add_site("campus", "Campus")  # a write: SQLite creates the -wal and -shm
        files = _modes(data_dir)
    finally:
        await db.close()
    assert {"central.db", "central.db-wal", "central.db-shm"} <= set(files)
    assert {"central-ed25519.key", "central-x25519.key", "credential-secret.key"} <= set(files)
    assert files == dict.fromkeys(files, 0o600), files


async def test_an_existing_database_becomes_0600(
    tmp_path: pathlib.Path, shared_umask: None
) -> None:
    """A central.db from before, created 0644 with its -wal and -shm (its writer still has
    it open, as after a crash), is made 0600 with them."""
    path = tmp_path / "central.db"
    before = sqlite3.connect(path)
    try:
        before.execute("PRAGMA journal_mode=WAL")
        before.execute("CREATE TABLE old (x)")
        before.commit()
        assert _modes(tmp_path, "central.db") == dict.fromkeys(
            ("central.db", "central.db-wal", "central.db-shm"), 0o644
        )
        db = database.Database.sqlite(path)
        await db.open()
        try:
            await db.add_site("campus", "Campus")
            modes = _modes(tmp_path, "central.db")
        finally:
            await db.close()
    finally:
        before.close()
    assert modes == dict.fromkeys(("central.db", "central.db-wal", "central.db-shm"), 0o600)
