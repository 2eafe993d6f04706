"""How the agent reaches its broker: client options, TLS, the will, and the backoff policy."""

from __future__ import annotations

import asyncio
import pathlib
import random
import ssl
import typing

import aiomqtt
import paho.mqtt.client
import paho.mqtt.packettypes
import paho.mqtt.properties
import paho.mqtt.reasoncodes

from edge_agent import bundle as bundle_mod
from edge_agent.protocol import topics

SESSION_EXPIRY_S = 7 * 24 * 3600
NO_MATCHING_SUBSCRIBERS = 16  # MQTT v5 PUBACK reason 0x10
Sent = paho.mqtt.client.MQTTMessageInfo  # a QoS 1 publish awaiting its PUBACK


class Client(aiomqtt.Client):
    """aiomqtt's client, plus the MQTT v5 PUBACK reason code of each QoS 1 publish.

    The reason code tells "stored for a subscriber" from "no matching subscribers" (e.g. a
    broker restarted and central has not re-subscribed yet); only the first may leave the
    outbox. aiomqtt drops the code, so this keeps it per message id.
    """

    def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        self._reasons: dict[int, int] = {}
        self._abandoned: set[int] = set()  # sent, but no one waits for the PUBACK any more
        super().__init__(*args, **kwargs)

    def _on_publish(
        self,
        client: paho.mqtt.client.Client,
        userdata: typing.Any,
        mid: int,
        reason_code: paho.mqtt.reasoncodes.ReasonCode,
        properties: paho.mqtt.properties.Properties,
    ) -> None:
        if mid in self._abandoned:
            self._abandoned.discard(mid)
        else:
            self._reasons[mid] = int(reason_code.value)
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish_acked(self, topic: str, payload: bytes, ack_timeout_s: float = 30) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (0 = accepted)."""
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != paho.mqtt.client.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if not info.is_published():
            confirmation = asyncio.Event()
            with self._pending_call(info.mid, confirmation, self._pending_publishes):
                await self._wait_for(confirmation.wait(), timeout=ack_timeout_s)
        return self._reasons.pop(info.mid, 0)

    def start_publish(self, topic: str, payload: bytes) -> Sent:
        """Publish at QoS 1 without waiting for the PUBACK (see `wait_acked`): several
        messages go out back to back, in order, up to the in-flight window."""
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != paho.mqtt.client.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        self._abandoned.discard(info.mid)  # a message id is reused once its flow is over
        return info

    def abandon(self, info: Sent) -> None:
        """No `wait_acked` will follow for this message: drop its reason code, now or when
        its PUBACK arrives."""
        if self._reasons.pop(info.mid, None) is None and not info.is_published():
            self._abandoned.add(info.mid)

    async def wait_acked(self, info: Sent, ack_timeout_s: float = 30) -> int:
        """The PUBACK reason code (0 = accepted) of a message from `start_publish`."""
        if not info.is_published():
            confirmation = asyncio.Event()
            with self._pending_call(info.mid, confirmation, self._pending_publishes):
                await self._wait_for(confirmation.wait(), timeout=ack_timeout_s)
        return self._reasons.pop(info.mid, 0)


def tls_context_for(b: bundle_mod.Bundle, state_dir: pathlib.Path) -> ssl.SSLContext:
    """With a CA in the bundle, trust that CA only (pinned): a certificate from any public CA
    for the broker's name is refused. Without one, the system's CAs."""
    if not b.mqtt_ca:
        return ssl.create_default_context()
    ca_file = state_dir / "broker-ca.pem"
    ca_file.write_text(b.mqtt_ca)
    return ssl.create_default_context(cafile=str(ca_file))


def client(
    b: bundle_mod.Bundle,
    state_dir: pathlib.Path,
    keepalive_s: int,
    will: bytes,
    inflight: int = 20,
) -> Client:
    """An MQTT v5 client with a persistent session and the retained `offline` will (`will`:
    the signed status report, see `protocol.report`); at most `inflight` QoS 1 messages
    await their PUBACK at once (the broker may lower it with its Receive Maximum)."""
    tls_context = None
    if b.tls:
        tls_context = tls_context_for(b, state_dir)
    # paho's Properties() has no annotations (a third-party gap).
    connect_properties = paho.mqtt.properties.Properties(  # type: ignore[no-untyped-call]
        paho.mqtt.packettypes.PacketTypes.CONNECT
    )
    connect_properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return Client(
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
        will=aiomqtt.Will(topics.topic(b.site, b.device, "status"), will, qos=1, retain=True),
        timeout=10,
        max_inflight_messages=inflight,
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
