"""The agent's health as Prometheus metrics in a text file (node_exporter's textfile
collector reads it; `edge_agent status` shows it), written atomically every few seconds.
A Pi has no business opening another listening port for this."""

from __future__ import annotations

import dataclasses
import pathlib

import prometheus_client

FILE_NAME = "metrics.prom"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    site: str
    room: str
    device: str
    enrolled: bool
    link_up: bool
    last_seq: int
    last_slot: int
    outbox: dict[str, int]
    dropped: dict[str, int]
    display_age_s: float | None
    storage_ok: bool
    trusted_time: bool
    showing_tokens: bool  # False while waiting for a trusted clock
    sensors: dict[str, str]  # sensor -> status ("ok", "replay ended", or the problem)
    uptime_s: float
    inflight_peak: int = 0  # most outbox rows awaiting their PUBACK at once (a drain)
    unacknowledged: int = 0  # proofs sent, awaiting central's ack
    acks_taken: int = 0
    acks_ignored: dict[str, int] = dataclasses.field(default_factory=dict)  # reason -> count
    resent: int = 0  # proofs published again since start (central past them, no ack)


def registry(snapshot: Snapshot) -> prometheus_client.CollectorRegistry:
    reg = prometheus_client.CollectorRegistry()
    labels = {"site": snapshot.site, "room": snapshot.room, "device": snapshot.device}
    names = list(labels)

    def gauge(name: str, doc: str, value: float, extra: dict[str, str] | None = None) -> None:
        extra = extra or {}
        metric = prometheus_client.Gauge(name, doc, [*names, *extra], registry=reg)
        metric.labels(**labels, **extra).set(value)

    gauge("roomproof_edge_enrolled", "1 once central has enrolled the device", snapshot.enrolled)
    gauge("roomproof_edge_broker_up", "1 while connected to the broker", snapshot.link_up)
    gauge("roomproof_edge_last_seq", "seq of the newest proof made", snapshot.last_seq)
    gauge("roomproof_edge_last_slot", "slot of the newest proof made", snapshot.last_slot)
    gauge(
        "roomproof_edge_storage_ok", "0 while the state dir is full/unwritable", snapshot.storage_ok
    )
    gauge("roomproof_edge_trusted_time", "1 while the clock is trusted", snapshot.trusted_time)
    gauge("roomproof_edge_showing_tokens", "1 while codes are shown", snapshot.showing_tokens)
    gauge(
        "roomproof_edge_mqtt_inflight_peak",
        "most outbox rows awaiting their PUBACK at once since start",
        snapshot.inflight_peak,
    )
    gauge(
        "roomproof_edge_proofs_unacknowledged",
        "proofs the broker took that central has not acknowledged yet",
        snapshot.unacknowledged,
    )
    gauge("roomproof_edge_acks_taken", "central's acks applied since start", snapshot.acks_taken)
    gauge("roomproof_edge_proofs_resent", "proofs sent again since start", snapshot.resent)
    ignored = prometheus_client.Gauge(
        "roomproof_edge_acks_ignored",
        "acks ignored since start (forged, expired, for another device or key)",
        [*names, "reason"],
        registry=reg,
    )
    for reason, count in sorted(snapshot.acks_ignored.items()):
        ignored.labels(**labels, reason=reason).set(count)
    gauge("roomproof_edge_uptime_seconds", "seconds since the agent started", snapshot.uptime_s)
    if snapshot.display_age_s is not None:
        gauge(
            "roomproof_edge_display_age_seconds",
            "seconds since a frame was last shown",
            snapshot.display_age_s,
        )
    depth = prometheus_client.Gauge(
        "roomproof_edge_outbox_depth", "rows waiting in the outbox", [*names, "kind"], registry=reg
    )
    for kind, count in sorted(snapshot.outbox.items()):
        depth.labels(**labels, kind=kind).set(count)
    dropped = prometheus_client.Gauge(
        "roomproof_edge_outbox_dropped",
        "rows dropped by the outbox bounds since installation",
        [*names, "kind"],
        registry=reg,
    )
    for kind, count in sorted(snapshot.dropped.items()):
        dropped.labels(**labels, kind=kind).set(count)
    sensor_up = prometheus_client.Gauge(
        "roomproof_edge_sensor_up", "1 while a sensor works", [*names, "sensor"], registry=reg
    )
    for sensor, status in sorted(snapshot.sensors.items()):
        sensor_up.labels(**labels, sensor=sensor).set(status == "ok")
    return reg


def write(path: pathlib.Path, snapshot: Snapshot) -> None:
    prometheus_client.write_to_textfile(str(path), registry(snapshot))
