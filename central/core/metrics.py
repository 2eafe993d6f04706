"""Prometheus metrics of one central process: proofs ingested and rejected by reason,
check-ins by outcome, latencies, devices online and their reported outbox depth.

One registry per application (not the library's global one), so that several centrals in
one test process, or a restart in place, never share counters.
"""

from __future__ import annotations

import time
import typing

import prometheus_client
from aiohttp import web

if typing.TYPE_CHECKING:  # the store is a layer above; only its type is named here
    from central.storage import database

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.proofs = prometheus_client.Counter(
            "roomproof_proofs",
            "MQTT messages handled, by outcome (accepted, late, or the rejection reason)",
            ["outcome"],
            registry=self.registry,
        )
        self.ingest_seconds = prometheus_client.Histogram(
            "roomproof_proof_ingest_seconds",
            "time to verify, judge and store one proof",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.acks = prometheus_client.Counter(
            "roomproof_acks",
            "signed acks sent to devices (docs/protocol.md, Acknowledgements)",
            registry=self.registry,
        )
        self.checkins = prometheus_client.Counter(
            "roomproof_checkins",
            "check-in attempts by outcome (a status, or the error code)",
            ["outcome"],
            registry=self.registry,
        )
        self.http_seconds = prometheus_client.Histogram(
            "roomproof_http_request_seconds",
            "HTTP request latency by route and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.devices = prometheus_client.Gauge(
            "roomproof_devices", "enrolled devices by state", ["state"], registry=self.registry
        )
        self.alerts = prometheus_client.Gauge(
            "roomproof_open_alerts", "open alerts by kind", ["kind"], registry=self.registry
        )
        self.outbox_depth = prometheus_client.Gauge(
            "roomproof_device_outbox_depth",
            "proofs waiting in a device's outbox, as its last telemetry reported",
            ["site", "device"],
            registry=self.registry,
        )

    async def refresh(self, db: database.Database) -> None:
        """Gauges that come from the store, read at scrape time."""
        devices = [d for d in await db.list_devices(None) if d.ed25519 is not None]
        self.devices.labels(state="enrolled").set(len(devices))
        self.devices.labels(state="online").set(sum(d.online for d in devices))
        counts: dict[str, int] = {}
        after = 0
        while True:
            page = await db.list_alerts(None, True, 1000, after)
            for alert in page:
                counts[alert.kind] = counts.get(alert.kind, 0) + 1
            if len(page) < 1000:
                break
            after = page[-1].id
        for kind in ("displaced", "offline", "clock", "gap", "fork"):
            self.alerts.labels(kind=kind).set(counts.get(kind, 0))

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)

    def middleware(self) -> typing.Any:
        @web.middleware
        async def timed(
            request: web.Request,
            handler: typing.Callable[[web.Request], typing.Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                resource = request.match_info.route.resource
                route = resource.canonical if resource is not None else "unmatched"
                if not route.startswith("/api/v1/events"):  # a stream, not a request
                    self.http_seconds.labels(request.method, route, str(status)).observe(
                        time.perf_counter() - started
                    )

        return timed
