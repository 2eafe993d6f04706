"""How the agent reaches its broker: client options, TLS, the will, and the backoff policy."""

from __future__ import annotations

import pathlib
import random
import ssl

import aiomqtt
import paho.mqtt.packettypes
import paho.mqtt.properties

from edge_agent import bundle as bundle_mod
from edge_agent.protocol import topics

SESSION_EXPIRY_S = 7 * 24 * 3600


def client(b: bundle_mod.Bundle, state_dir: pathlib.Path, keepalive_s: int) -> aiomqtt.Client:
    """An MQTT v5 client with a persistent session and the retained `offline` will."""
    tls_context = None
    if b.tls:
        tls_context = ssl.create_default_context()
        if b.mqtt_ca:
            ca_file = state_dir / "broker-ca.pem"
            ca_file.write_text(b.mqtt_ca)
            tls_context.load_verify_locations(cafile=str(ca_file))
    connect_properties = paho.mqtt.properties.Properties(paho.mqtt.packettypes.PacketTypes.CONNECT)
    connect_properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return aiomqtt.Client(
        b.mqtt_host,
        b.mqtt_port,
        username=b.mqtt_username,
        password=b.mqtt_password,
        identifier=f"{b.site}-{b.device}",
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=connect_properties,
        keepalive=keepalive_s,
        tls_context=tls_context,
        will=aiomqtt.Will(topics.topic(b.site, b.device, "status"), b"offline", qos=1, retain=True),
        timeout=10,
    )


class Backoff:
    """Exponential backoff with full jitter, reset after a successful connection."""

    def __init__(self, maximum_s: float, initial_s: float = 0.5) -> None:
        self.maximum_s = maximum_s
        self.initial_s = initial_s
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum_s, self.initial_s * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
