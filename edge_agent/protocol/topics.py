"""MQTT topic names: roomproof/v1/{site}/{device}/{kind}."""

from __future__ import annotations

import dataclasses

from edge_agent.protocol import names

PREFIX = "roomproof/v1"
KINDS = frozenset({"proof", "status", "telemetry", "enroll", "cmd"})


@dataclasses.dataclass(frozen=True)
class Topic:
    site: str
    device: str
    kind: str


def topic(site: str, device: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    names.validate("site", site)
    names.validate("device", device)
    return f"{PREFIX}/{site}/{device}/{kind}"


def parse(value: str) -> Topic:
    """Split a topic of ours into its parts; anything else raises ValueError."""
    parts = value.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != PREFIX or parts[4] not in KINDS:
        raise ValueError(f"not a roomproof v1 topic: {value[:200]!r}")
    if not names.is_valid(parts[2]) or not names.is_valid(parts[3]):
        raise ValueError(f"invalid site or device in topic: {value[:200]!r}")
    return Topic(site=parts[2], device=parts[3], kind=parts[4])


def shared(group: str, kind: str) -> str:
    """A shared subscription so that several central processes split the load."""
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    names.validate("share group", group)
    return f"$share/{group}/{PREFIX}/+/+/{kind}"


def device_filter(site: str, device: str) -> str:
    return f"{PREFIX}/{names.validate('site', site)}/{names.validate('device', device)}/#"
