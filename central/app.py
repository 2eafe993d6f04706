"""Central as one aiohttp application: store, MQTT bridge, check-ins, API, event hub."""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import gc
import logging
import ssl

from aiohttp import web

from central.admin import retention
from central.checkin import checkins
from central.core import clock as clock_mod
from central.core import events
from central.core import keyring
from central.core import metrics
from central.core import outage
from central.core import settings as settings_mod
from central.http import api
from central.http import api_attendance
from central.http import api_dashboard
from central.http import api_evidence
from central.http import api_reports
from central.http import api_webhooks
from central.http import auth
from central.http import middleware
from central.http import openapi
from central.http import webhooks
from central.ingest import bridge as bridge_mod
from central.storage import database
from central.storage import stores
from edge_agent import sdnotify

log = logging.getLogger("central")
MAX_BODY_BYTES = 16 * 1024
GC_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)


def build(
    settings: settings_mod.CentralSettings,
    with_bridge: bool = True,
    clock: clock_mod.Clock | None = None,
) -> web.Application:
    clock = clock or clock_mod.SystemClock()
    keys = keyring.load(settings.data_dir)
    db = stores.make(settings)
    hub = events.Hub()
    meters = metrics.Metrics()
    bridge = bridge_mod.Bridge(settings, db, keys, hub, clock, meters) if with_bridge else None
    service = checkins.CheckinService(settings, db, keys, clock)
    app = web.Application(
        middlewares=[meters.middleware(), middleware.middleware], client_max_size=MAX_BODY_BYTES
    )
    routes = api.Api(
        db, keys, service, hub, bridge, settings.public_url.startswith("https://"), clock, meters
    )
    api_attendance.AttendanceApi(db, service, hub, clock).routes(app)
    api_evidence.EvidenceApi(db, keys, settings, clock).routes(app)
    api_dashboard.DashboardApi(db, clock).routes(app)
    dispatcher = webhooks.Dispatcher(db, settings, hub, clock)
    api_webhooks.WebhooksApi(
        db, clock.now_ms, dispatcher.webhooks_changed, dispatcher.guard
    ).routes(app)
    openapi.routes(app)
    api_reports.ReportsApi(db, keys, settings, service, clock).routes(app)
    routes.routes(app)  # last: it ends with the catch-all for unknown /api/ paths

    async def lifecycle(app: web.Application) -> collections.abc.AsyncIterator[None]:
        if bridge is not None:
            # Refuse an open broker before serving anything (bridge_mod.BrokerOpen).
            bridge.broker_checked = await bridge_mod.check_broker(settings)
        await db.open()
        try:
            await auth.check_tokens(db)  # sites are sealed: no token may act without one
        except auth.UnscopedTokens:
            await db.close()
            raise
        tasks = (
            [
                asyncio.create_task(bridge.run(), name="mqtt-bridge"),
                asyncio.create_task(bridge.watch_silence(), name="silence-watch"),
            ]
            if bridge
            else []
        )
        tasks.append(asyncio.create_task(retention.run(db, settings, clock), name="retention"))
        tasks.append(asyncio.create_task(dispatcher.run(), name="webhooks"))
        notifier = sdnotify.Notifier.from_env()
        tasks.append(asyncio.create_task(_health(notifier, db, bridge), name="systemd-health"))
        yield
        notifier.stopping()
        hub.close()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if bridge is not None:
            bridge.signatures.close()
            if bridge.acks is not None:
                await bridge.acks.close()
        service.close()
        await db.close()

    async def end_streams(app: web.Application) -> None:
        hub.close()  # open event streams end now, not after the shutdown timeout

    app.on_shutdown.append(end_streams)
    app.cleanup_ctx.append(lifecycle)
    return app


async def _health(
    notifier: sdnotify.Notifier, db: database.Database, bridge: bridge_mod.Bridge | None
) -> None:
    """READY=1 once serving; WATCHDOG=1 only while the store answers (so systemd restarts a
    central whose database handle is wedged); STATUS= says what an operator wants to know."""
    notifier.ready("serving")
    interval = min(notifier.watchdog_interval_s or 10.0, 10.0)
    was_healthy = True
    while True:
        try:
            await asyncio.wait_for(db.list_devices("-"), timeout=interval)
            healthy = True
        except Exception as exc:  # any store failure means unhealthy, never a crash
            if was_healthy:  # one line per state change, not one per check
                log.error("store check failed: %s; not feeding the systemd watchdog", exc)
            healthy = False
        if healthy and not was_healthy:
            log.warning("store check passes again; feeding the systemd watchdog")
        was_healthy = healthy
        broker = "connected" if bridge is not None and bridge.connected else "disconnected"
        # The read check answers whether the store is reachable; the last write's outcome
        # whether it can write (a full disk still reads): either failing is UNAVAILABLE.
        store_state = "ok" if healthy and not outage.STORE.down else "UNAVAILABLE"
        notifier.status(f"serving; broker {broker}; store {store_state}")
        if healthy and notifier.watchdog_interval_s is not None:
            notifier.watchdog()
        await asyncio.sleep(interval)


def serve(settings: settings_mod.CentralSettings) -> None:
    app = build(settings)
    log.info(
        "central on %s://%s:%d (public %s), broker %s",
        "https" if settings.http_tls_cert else "http",
        settings.http_host,
        settings.http_port,
        settings.public_url,
        settings.mqtt_url,
    )
    context = None
    if settings.http_tls_cert is not None and settings.http_tls_key is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(settings.http_tls_cert), str(settings.http_tls_key))
    # Everything loaded so far lives as long as the process: out of the collector's sight,
    # and young collections made rarer, so a burst is not paused by full collections.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 50)
    try:
        _run(app, settings, context)
    except bridge_mod.BrokerOpen as exc:
        raise SystemExit(f"error: {exc}") from None


def _run(
    app: web.Application, settings: settings_mod.CentralSettings, context: ssl.SSLContext | None
) -> None:
    web.run_app(
        app,
        host=settings.http_host,
        port=settings.http_port,
        ssl_context=context,
        print=None,
        access_log=None,
        shutdown_timeout=5,
        loop=_event_loop(),
    )


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed (Linux, macOS): the check-in burst is loop-bound."""
    try:
        import uvloop  # optional: the `central` extra installs it where it builds
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
