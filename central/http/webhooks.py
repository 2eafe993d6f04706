"""Signed outbound webhooks: events become durable deliveries in the store, a background task
posts them and retries with backoff, so a CRM or LMS can follow check-ins and closed sessions.

Each delivery is a POST of `{"id", "type", "created_at", "data"}` with the headers
`Roomproof-Event-Id` and `Roomproof-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret,
"<t>.<raw body>")>` (Stripe-style: the time inside the signature lets a receiver refuse
replays). A 2xx answer delivers it; anything else is retried up to `webhook_max_attempts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import ssl
import time
import typing
import urllib.parse

import aiohttp
import aiohttp.abc

from central.checkin import attendance
from central.core import clock as clock_mod
from central.core import events
from central.core import outage
from central.core import params
from central.core import settings as settings_mod
from central.domain import timetable
from central.http.apimodels import parse
from central.http.apimodels import responses
from central.storage import database
from central.storage import store
from central.storage import stores

log = logging.getLogger(__name__)
EVENT_TYPES = ("checkin", "session_closed")
SIGNATURE_HEADER = "Roomproof-Signature"
EVENT_ID_HEADER = "Roomproof-Event-Id"
SESSION_CURSOR = "session_closed"
CLOSE_LOOKBACK_MS = 2 * 86400_000  # sessions end the day they start
IDLE_CURSOR_MS = 60_000
PURGE_EVERY_S = 3600.0
LEASE_MS = 30_000  # a claimed delivery another process may retry after timeout + this
BATCH = 100
MAX_URL = 2000


class InvalidUrl(ValueError):
    """A webhook URL central will not post to; the message says why."""


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def check_url(url: object) -> str:
    """http(s) with a host, no credentials, no whitespace; http is meant for testing."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise InvalidUrl(f"url must be text up to {MAX_URL} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidUrl("url must not contain whitespace or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidUrl(f"url is not valid: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidUrl("url must start with https:// (or http:// for testing)")
    if not parts.hostname:
        raise InvalidUrl("url needs a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidUrl("url must not carry credentials; verify the signature instead")
    if port == 0:
        raise InvalidUrl("url port must be 1..65535")
    if "%" in parts.hostname:
        raise InvalidUrl("url host must not carry a zone (%): link-local hosts are refused")
    if ":" in parts.hostname:
        try:
            ipaddress.IPv6Address(parts.hostname)
        except ValueError as exc:
            raise InvalidUrl("url host must be a DNS name or an IP address") from exc
    return url


# -- where webhooks may post ------------------------------------------------------------------
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Cloud instance metadata services; most are link-local, private or CGNAT anyway, listed
# so that none depends on the stdlib's tables: AWS/GCP/Azure/OpenStack, AWS ECS, AWS IMDS
# over IPv6, Alibaba, Oracle, Azure's wire server.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "192.0.0.192",
        "168.63.129.16",
    )
)


class Blocked(Exception):  # not an OSError: aiohttp lets it out of a lookup unwrapped
    """A webhook destination on an internal address; the message is the kind of address."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeliveryError(enum.StrEnum):
    """What the delivery log says about a failed attempt without an HTTP status: our own
    classification, never what the remote end said."""

    TIMEOUT = "timeout"
    REFUSED = "refused"
    TLS = "tls"
    DNS = "dns"
    BLOCKED = "blocked"
    CONNECT = "connect"  # unreachable and the like
    RESET = "reset"
    DISCONNECTED = "disconnected"
    PROTOCOL = "protocol"  # the answer was not HTTP
    BAD_URL = "bad_url"
    ERROR = "error"


def internal(address: Address) -> str | None:
    """Why central must not post to `address` (the kind of address), or None when it is
    globally reachable. IPv6 forms that carry an IPv4 address (mapped, 6to4, Teredo, NAT64)
    are judged by that address too."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = [address.ipv4_mapped, address.sixtofour]
        if address.teredo is not None:
            embedded.extend(address.teredo)
        if address in NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        for inner in embedded:
            if inner is not None and (reason := internal(inner)) is not None:
                return f"{reason} (inside an IPv6 address)"
    if address in METADATA:
        return "cloud metadata"
    checks = (
        (address.is_loopback, "loopback"),
        (address.is_unspecified, "unspecified"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (isinstance(address, ipaddress.IPv4Address) and address in CGNAT, "CGNAT"),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local, "site-local"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not globally reachable"),
    )
    return next((reason for hit, reason in checks if hit), None)


def _numeric(host: str) -> list[Address] | None:
    """The addresses `host` spells without DNS (any form the C library takes: 127.1,
    0x7f000001, 2130706433, [::ffff:127.0.0.1]...), or None for a name."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]


def _host(url: str) -> str:
    return (urllib.parse.urlsplit(url).hostname or "").rstrip(".")


@dataclasses.dataclass(frozen=True)
class Guard:
    """Decides which addresses webhooks may reach: the global ones, and what the admin listed
    in webhook_allow_hosts / webhook_allow_networks."""

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: settings_mod.CentralSettings) -> Guard:
        return cls(
            frozenset(settings.webhook_allow_hosts),
            tuple(ipaddress.ip_network(n, strict=False) for n in settings.webhook_allow_networks),
        )

    def check(self, host: str, addresses: typing.Iterable[Address]) -> None:
        """Raises Blocked unless every address is allowed (one bad answer blocks them all)."""
        if host.lower().rstrip(".") in self.allow_hosts:
            return
        for address in addresses:
            if any(address in network for network in self.allow_networks):
                continue
            if (reason := internal(address)) is not None:
                raise Blocked(reason)

    def check_literal(self, url: str) -> bool:
        """For a URL whose host is an address (in any spelling): Blocked or allowed, True.
        False for a host name, which the resolver checks."""
        host = _host(url)
        found = _numeric(host)
        if found is None:
            if host.lower() == "localhost" or host.lower().endswith(".localhost"):
                self.check(host, [ipaddress.IPv4Address("127.0.0.1")])  # RFC 6761
            return False
        self.check(host, found)
        return True

    async def lookup(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[socket.AddressFamily, int, Address]]:
        """Resolve `host` and check every address: (family, proto, address) to connect to."""
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, family=family
        )
        found: list[tuple[socket.AddressFamily, int, Address]] = [
            (info[0], info[2], ipaddress.ip_address(str(info[4][0]).partition("%")[0]))
            for info in infos
        ]
        self.check(host, [address for _, _, address in found])
        return found

    async def check_url(self, url: str, timeout_s: float) -> None:
        """At registration: Blocked if the host is, or resolves to, an address not allowed.
        A name that does not resolve (yet) passes: every delivery resolves and checks again."""
        if self.check_literal(url):
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self.lookup(_host(url), 0)
        except (OSError, TimeoutError, UnicodeError):
            return

    def resolver(self) -> aiohttp.abc.AbstractResolver:
        return _Resolver(self)


class _Resolver(aiohttp.abc.AbstractResolver):
    """aiohttp's only DNS lookup for webhook deliveries: it answers with the checked
    addresses alone (so the connection goes to what was checked), or raises Blocked."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        found = await self.guard.lookup(host, port, family)
        return [
            aiohttp.abc.ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=kind,
                proto=proto,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for kind, proto, address in found
        ]

    async def close(self) -> None:
        return None


def delivery_error(exc: BaseException) -> str:
    """The delivery log's words for a failed attempt: a DeliveryError (with the kind of
    address when blocked), never the exception's text, which may quote the remote end."""
    if isinstance(exc, Blocked):
        return f"{DeliveryError.BLOCKED}: {exc.reason}"
    kind = DeliveryError.ERROR
    if isinstance(exc, TimeoutError):
        kind = DeliveryError.TIMEOUT
    elif isinstance(exc, aiohttp.ClientConnectorDNSError | socket.gaierror):
        kind = DeliveryError.DNS
    elif isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        kind = DeliveryError.TLS
    elif isinstance(exc, aiohttp.ClientConnectorError):
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        kind = DeliveryError.REFUSED if refused else DeliveryError.CONNECT
    elif isinstance(exc, aiohttp.InvalidURL):
        kind = DeliveryError.BAD_URL
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        kind = DeliveryError.DISCONNECTED
    elif isinstance(exc, aiohttp.ClientOSError | ConnectionError):
        kind = DeliveryError.RESET
    elif isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        kind = DeliveryError.PROTOCOL
    return str(kind)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Roomproof-Signature header value for this body at this unix time."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now_s: int, tolerance_s: int = 300) -> bool:
    """What a receiver does (docs/attendance.md shows it): HMAC matches, time is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(now_s - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split(",v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def backoff_ms(settings: settings_mod.CentralSettings, attempts: int) -> int:
    """Delay before attempt `attempts + 1`: doubling from webhook_backoff_s up to the cap,
    with jitter (half fixed, half random) so that receivers coming back are not stampeded."""
    delay = min(settings.webhook_backoff_max_s, settings.webhook_backoff_s * 2 ** (attempts - 1))
    return int(delay * 1000 * (0.5 + random.random() / 2))


def event_body(event_id: str, event_type: str, created_ms: int, data: dict[str, typing.Any]) -> str:
    return json.dumps(
        {"id": event_id, "type": event_type, "created_at": params.iso(created_ms), "data": data},
        separators=(",", ":"),
    )


def _tick_failed(exc: Exception, failures: int) -> int:
    """One log line when dispatching starts failing (a traceback only for what is not a store
    outage), none for the ticks after it."""
    if stores.is_outage(exc):
        outage.STORE.failed(exc)
        if failures == 0:
            log.error("webhook dispatch paused, store unavailable (%s); backing off", exc)
    elif failures == 0:
        log.exception("webhook dispatch failed; backing off")
    return failures + 1


def _tick_wait(settings: settings_mod.CentralSettings, failures: int) -> float:
    if failures == 0:
        return settings.webhook_poll_s
    return min(outage.BACKOFF_CAP_S, settings.webhook_poll_s * 2.0 ** min(failures, 16))


class Dispatcher:
    """Turns events into deliveries and delivers them: one task per webhook at a time, so a
    slow or dead receiver only delays its own queue."""

    def __init__(
        self,
        db: database.Database,
        settings: settings_mod.CentralSettings,
        hub: events.Hub,
        clock: clock_mod.Clock,
    ) -> None:
        self.db = db
        self.settings = settings
        self.hub = hub
        self.clock = clock
        self.guard = Guard.from_settings(settings)
        self._senders: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._subscribed: frozenset[str] | None = None  # event types some webhook wants
        self._next_purge = 0.0

    def webhooks_changed(self) -> None:
        """Called by the API after an add or delete in this process (others notice within
        one webhook_poll_s)."""
        self._subscribed = None
        self._wake.set()

    async def _subscriptions(self) -> frozenset[str]:
        if self._subscribed is None:
            hooks = await self.db.list_webhooks()
            self._subscribed = frozenset(kind for hook in hooks for kind in hook.events)
        return self._subscribed

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s)
        # No DNS cache: every delivery resolves and checks again; no proxy from the
        # environment (trust_env is off), so the checked address is the one connected to.
        connector = aiohttp.TCPConnector(resolver=self.guard.resolver(), use_dns_cache=False)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            listener = asyncio.create_task(self._listen(), name="webhook-events")
            try:
                failures = 0  # consecutive failed ticks: the wait doubles, capped
                while True:
                    try:
                        self._subscribed = None  # another process may have changed them
                        await self._closed_sessions()
                        await self._start_senders(http)
                        await self._purge()
                    except Exception as exc:
                        failures = _tick_failed(exc, failures)
                    else:
                        if failures:
                            log.warning("webhook dispatch works again after %d failures", failures)
                            outage.STORE.succeeded()
                        failures = 0
                    wait_s = _tick_wait(self.settings, failures)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait_s)
                    self._wake.clear()
            finally:
                listener.cancel()
                for task in [listener, *self._senders.values()]:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    # -- events -> deliveries --------------------------------------------------------------
    async def _listen(self) -> None:
        """Accepted check-ins, as published on the hub; resubscribes if the hub dropped us."""
        while True:
            queue = self.hub.subscribe()
            try:
                while (item := await queue.get()) is not None:
                    kind, data = item
                    if kind == "checkin":
                        await self._checkin(data)
            finally:
                self.hub.unsubscribe(queue)
            log.info("webhook listener lost its hub subscription (dropped, or stopping)")
            await asyncio.sleep(self.settings.webhook_poll_s)

    async def _checkin(self, data: dict[str, typing.Any]) -> None:
        if "checkin" not in await self._subscriptions():
            return  # no write per check-in while nobody listens
        payload = {k: v for k, v in data.items() if k != "evidence"}  # network details stay
        now = self.clock.now_ms()
        event_id = f"evt_checkin_{data['id']}"
        try:
            body = event_body(event_id, "checkin", now, payload)
            site = data.get("site") if isinstance(data.get("site"), str) else None
            if await self.db.enqueue_webhook_event(event_id, "checkin", body, now, site):
                self._wake.set()
        except Exception:
            log.exception("could not queue webhook event %s", event_id)

    async def _closed_sessions(self) -> None:
        """session_closed once per occurrence whose end passed since the last look."""
        now = self.clock.now_ms()
        since = await self.db.webhook_cursor(SESSION_CURSOR)
        if since is None or now <= since:
            if since is None:
                await self.db.set_webhook_cursor(SESSION_CURSOR, now)
            return
        wanted = "session_closed" in await self._subscriptions()
        if not wanted and now - since < IDLE_CURSOR_MS:
            return  # nobody listens: move the cursor now and then, not on every tick
        if wanted:
            after = 0
            while page := await self.db.list_sessions(None, None, None, 500, after):
                for session in page:
                    for item in timetable.between(session, since - CLOSE_LOOKBACK_MS, now):
                        if since < item.end_ms <= now:
                            await self._session_closed(item, now)
                after = page[-1].id
                if len(page) < 500:
                    break
        await self.db.set_webhook_cursor(SESSION_CURSOR, now)

    async def _session_closed(self, occurrence: timetable.Occurrence, now: int) -> None:
        rows = await attendance.report(self.db, occurrence, now)
        data = {
            "site": occurrence.session.site,
            "occurrence": parse.plain(responses.Occurrence.of(occurrence)),
            "summary": attendance.summary(rows),
            "attendance": [row.json(params.iso) for row in rows],
        }
        event_id = f"evt_session_closed_{occurrence.session.id}_{occurrence.key}"
        body = event_body(event_id, "session_closed", occurrence.end_ms, data)
        await self.db.enqueue_webhook_event(
            event_id, "session_closed", body, now, occurrence.session.site
        )

    async def _purge(self) -> None:
        """Hourly: finished deliveries older than retention_days go (their bodies name
        students)."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_EVERY_S
        before = self.clock.now_ms() - int(self.settings.retention_days * 86400_000)
        purged = await self.db.purge_webhook_deliveries(before)
        if purged:
            log.info("retention: purged %d finished webhook deliveries", purged)

    # -- deliveries ------------------------------------------------------------------------
    async def _start_senders(self, http: aiohttp.ClientSession) -> None:
        for webhook_id in await self.db.webhooks_due(self.clock.now_ms()):
            running = self._senders.get(webhook_id)
            if running is None or running.done():
                self._senders[webhook_id] = asyncio.create_task(
                    self._send_due(http, webhook_id), name=f"webhook-{webhook_id}"
                )

    async def _send_due(self, http: aiohttp.ClientSession, webhook_id: int) -> None:
        """This webhook's due deliveries, oldest first, one at a time."""
        try:
            hook = next((w for w in await self.db.list_webhooks() if w.id == webhook_id), None)
            while hook is not None:
                now = self.clock.now_ms()
                due = await self.db.due_webhook_deliveries(hook.id, now, BATCH)
                if not due:
                    return
                for delivery in due:
                    await self._attempt(http, hook, delivery)
        except Exception:  # the store failed: the deliveries stay due, the next tick retries
            log.exception("webhook %d: sending failed", webhook_id)

    async def _attempt(
        self, http: aiohttp.ClientSession, hook: store.Webhook, delivery: store.WebhookDelivery
    ) -> None:
        assert delivery.next_attempt_at is not None
        now = self.clock.now_ms()
        lease = now + int(self.settings.webhook_timeout_s * 1000) + LEASE_MS
        if not await self.db.claim_webhook_delivery(delivery.id, delivery.next_attempt_at, lease):
            return
        body = delivery.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "roomproof-webhooks/1",
            EVENT_ID_HEADER: delivery.event_id,
            SIGNATURE_HEADER: sign(hook.secret, now // 1000, body),
        }
        status: int | None = None
        error: str | None = None
        try:
            self.guard.check_literal(hook.url)  # a host name is checked by the resolver
            async with http.post(
                hook.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status  # the body is not read: receivers owe us none
        except Exception as exc:  # blocked, refused, reset, bad TLS, odd URL: one failed attempt
            error = delivery_error(exc)
            log.info("webhook %d: %s (%s)", hook.id, error, type(exc).__name__)
        attempts = delivery.attempts + 1
        done_at = self.clock.now_ms()
        if status is not None and 200 <= status < 300:
            await self.db.record_webhook_attempt(delivery.id, status, None, None, done_at)
            return
        if status is not None:
            error = f"HTTP {status}"
        retry = (
            done_at + backoff_ms(self.settings, attempts)
            if attempts < self.settings.webhook_max_attempts
            else None
        )
        log.warning(
            "webhook %d delivery %s attempt %d failed: %s%s",
            hook.id,
            delivery.event_id,
            attempts,
            error,
            "" if retry is not None else "; giving up",
        )
        await self.db.record_webhook_attempt(delivery.id, status, error, retry, None)
