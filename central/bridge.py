"""MQTT -> central: proofs through a shared subscription, device status, enrollment.

A persistent MQTT v5 session (clean_start False, session expiry) keeps QoS 1 messages queued
at the broker while central restarts, and each message is acknowledged (PUBACK) only after it
has been handled: a central killed mid-ingest gets the message again, and storing is idempotent,
so redelivery stores nothing twice.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import random
import ssl
import time
import typing

import aiomqtt
import paho.mqtt.packettypes
import paho.mqtt.properties

from central import clock as clock_mod
from central import devicecmd
from central import enrollment
from central import environment
from central import events
from central import keyring
from central import metrics
from central import settings as settings_mod
from central import sigpool
from central import store
from central import stores
from central import verifier
from edge_agent.protocol import proof
from edge_agent.protocol import topics

log = logging.getLogger(__name__)
SESSION_EXPIRY_S = 24 * 3600
TELEMETRY_MAX_BYTES = 16 * 1024
PIPELINE_WINDOW = 64
ROOM_CACHE_S = 5.0


class StoreUnavailable(Exception):
    """The store failed even to count a rejection: the database is down, not the message."""


class Bridge:
    def __init__(
        self,
        settings: settings_mod.CentralSettings,
        db: store.Store,
        keys: keyring.Keyring,
        hub: events.Hub,
        clock: clock_mod.Clock | None = None,
        metrics_: metrics.Metrics | None = None,
    ) -> None:
        self.clock = clock or clock_mod.SystemClock()
        self.metrics = metrics_ or metrics.Metrics()
        self.telemetry: dict[tuple[str, str], dict[str, typing.Any]] = {}
        self.open_alerts: set[tuple[str, str, str]] = set()
        # Commands this process sent, per device (the last 50), with their reported outcome.
        self.commands: dict[tuple[str, str], collections.deque[dict[str, typing.Any]]] = {}
        self._rooms: dict[tuple[str, str], tuple[float, store.Room | None]] = {}
        self.settings = settings
        self.db = db
        self.keys = keys
        self.hub = hub
        self.offsets = verifier.ClockOffsets()
        self.key_starts = verifier.KeyStarts()
        self.signatures = sigpool.SignaturePool()
        # Only a shared store (PostgreSQL) has other processes whose key changes can race.
        self.key_grace = verifier.KeyChangeGrace() if settings.database_url else None
        self.connected = False
        self._client: aiomqtt.Client | None = None

    def _client_options(self) -> aiomqtt.Client:
        host, port, tls = self.settings.mqtt_host_port()
        context = None
        if tls:
            context = ssl.create_default_context(
                cafile=str(self.settings.mqtt_ca) if self.settings.mqtt_ca else None
            )
        properties = paho.mqtt.properties.Properties(paho.mqtt.packettypes.PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        return aiomqtt.Client(
            host,
            port,
            username=self.settings.mqtt_username,
            password=self.settings.mqtt_password,
            identifier=self.settings.mqtt_client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            tls_context=context,
            keepalive=30,
            timeout=10,
        )

    async def run(self) -> None:
        """Connect, subscribe, handle messages; reconnect with backoff until cancelled."""
        attempt = 0
        group = self.settings.mqtt_share_group
        while True:
            try:
                client = self._client_options()
                # Acknowledge after storing, not on receipt (paho's default).
                client._client.manual_ack_set(True)
                async with client:
                    self._client = client
                    self.connected = True
                    attempt = 0
                    log.info("connected to the broker at %s", self.settings.mqtt_url)
                    for kind in ("proof", "status", "enroll", "telemetry"):
                        await client.subscribe(topics.shared(group, kind), qos=1)
                    await self._pipeline(client)
            except aiomqtt.MqttError as exc:
                if self.connected or attempt == 0:
                    log.warning("broker unreachable (%s); retrying", exc)
            except StoreUnavailable as exc:
                # Unacknowledged, the message stays with the broker (persistent session) and
                # comes again after the reconnect.
                log.error("store unavailable (%s); reconnecting to get the message again", exc)
            finally:
                self.connected = False
                self._client = None
            attempt += 1
            ceiling = min(10.0, 0.5 * 2**attempt)
            await asyncio.sleep(random.uniform(ceiling / 2, ceiling))

    async def _pipeline(self, client: aiomqtt.Client) -> None:
        """Handle up to PIPELINE_WINDOW messages at once: one device's messages strictly in
        order (its chain), different devices side by side (verification overlaps the store's
        I/O). PUBACKs still go out in arrival order, each after its message was handled, as
        MQTT requires."""
        pending: asyncio.Queue[tuple[asyncio.Task[None], aiomqtt.Message]] = asyncio.Queue(
            PIPELINE_WINDOW
        )
        last: dict[str, asyncio.Task[None]] = {}

        async def acknowledge() -> None:
            while True:
                task, message = await pending.get()
                await task  # StoreUnavailable ends the connection: the rest comes again
                if message.qos > 0:
                    client._client.ack(message.mid, message.qos)

        async def read() -> None:
            nonlocal last
            async for message in client.messages:
                topic = str(message.topic)
                key = topic.rsplit("/", 1)[0]  # roomproof/v1/{site}/{device}
                task = asyncio.create_task(
                    self._after(last.get(key), topic, _payload(message.payload))
                )
                last[key] = task
                if len(last) > 10_000:
                    last = {k: t for k, t in last.items() if not t.done()}
                await pending.put((task, message))  # waits while the window is full

        reader = asyncio.create_task(read())
        acker = asyncio.create_task(acknowledge())
        try:
            done, _ = await asyncio.wait({reader, acker}, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                finished.result()  # MqttError from the reader, StoreUnavailable from the acker
        finally:
            # Every handler task still around, also those queued for the acknowledger behind
            # the one that failed: each is cancelled or finished and its outcome retrieved.
            leftovers = [reader, acker, *last.values()]
            while not pending.empty():
                leftovers.append(pending.get_nowait()[0])
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

    async def _after(self, previous: asyncio.Task[None] | None, topic: str, payload: bytes) -> None:
        if previous is not None:
            await asyncio.wait({previous})  # its outcome is its own; only the order matters here
            if previous.cancelled() or previous.exception() is not None:
                raise StoreUnavailable("an earlier message of this device was not handled")
        await self.handle(topic, payload)

    async def handle(self, topic: str, payload: bytes) -> None:
        """Dispatch one message; any failure is a counted rejection, never an exception."""
        try:
            where = topics.parse(topic)
        except ValueError:
            await self._reject("topic_mismatch", topic, payload, "not a roomproof topic")
            return
        try:
            if where.kind == "proof":
                await self._proof(topic, payload)
            elif where.kind == "status":
                await self._status(where, payload)
            elif where.kind == "enroll":
                await self._enroll(where, payload)
            elif where.kind == "telemetry":
                await self._telemetry(where, topic, payload)
        except Exception as exc:
            if stores.is_outage(exc):
                raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
            log.exception("internal error handling %s", topic)
            try:
                await self._reject("internal", topic, payload, "internal error")
            except Exception as again:
                raise StoreUnavailable(str(again) or type(again).__name__) from exc

    async def _telemetry(self, where: topics.Topic, topic: str, payload: bytes) -> None:
        """Kept in memory, per process: the device's latest health (for /metrics and the API)."""
        try:
            if len(payload) > TELEMETRY_MAX_BYTES:
                raise ValueError("oversize")
            data = json.loads(payload)
            if isinstance(data, dict) and data.get("type") == "command_result":
                await self._command_result(where, topic, payload, data)
                return
            depth = data["outbox_depth"]
            proofs = depth.get("proof", 0)
            if not isinstance(data, dict) or not isinstance(proofs, int) or not 0 <= proofs < 2**53:
                raise ValueError("shape")
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError):
            await self._reject("bad_telemetry", topic, payload, "telemetry is not the agent's JSON")
            return
        if await self.db.get_device(where.site, where.device) is None:
            await self._reject("unknown_device", topic, payload, "telemetry of an unknown device")
            return
        self.telemetry[(where.site, where.device)] = {
            "received_at": self.clock.now_ms(),
            "outbox_depth": {
                str(k): v for k, v in depth.items() if isinstance(v, int) and 0 <= v < 2**53
            },
            "uptime_s": data.get("uptime_s") if isinstance(data.get("uptime_s"), int) else None,
            "sensors": data.get("sensors") if isinstance(data.get("sensors"), dict) else {},
            "clock": data.get("clock") if isinstance(data.get("clock"), dict) else {},
        }
        self.metrics.outbox_depth.labels(site=where.site, device=where.device).set(proofs)

    async def send_command(
        self, site: str, device: str, kind: str, args: dict[str, typing.Any], ttl_s: int
    ) -> dict[str, typing.Any]:
        """Signs and publishes a command on the device's `cmd` topic (QoS 1: the broker keeps
        it for a device that is offline); its outcome arrives as the device's telemetry."""
        if self._client is None:
            raise ConnectionError("central is not connected to the broker")
        signed, sent = await devicecmd.prepare(
            self.db, self.keys, self.clock.now_ms(), site, device, kind, args, ttl_s
        )
        await self._client.publish(topics.topic(site, device, "cmd"), signed.encode(), qos=1)
        history = self.commands.setdefault((site, device), collections.deque(maxlen=50))
        history.append(sent)
        return sent

    async def _command_result(
        self, where: topics.Topic, topic: str, payload: bytes, data: dict[str, typing.Any]
    ) -> None:
        outcome, reason = data.get("outcome"), data.get("reason", "")
        if outcome not in ("applied", "rejected") or not isinstance(reason, str):
            await self._reject("bad_telemetry", topic, payload, "malformed command result")
            return
        for sent in self.commands.get((where.site, where.device), ()):
            if sent["nonce"] == data.get("nonce"):
                sent["outcome"], sent["reason"] = outcome, reason[:100]
        self.hub.publish(
            "command",
            {
                "site": where.site,
                "device": where.device,
                "nonce": data.get("nonce") if isinstance(data.get("nonce"), str) else None,
                "outcome": outcome,
                "reason": reason[:100],
            },
        )

    async def _proof(self, topic: str, payload: bytes) -> None:
        received = self.clock.now_ms()
        started = time.perf_counter()
        try:
            accepted = await verifier.verify(
                self.db,
                self.offsets,
                topic,
                payload,
                received,
                self.settings.proof_max_bytes,
                int(self.settings.clock_tolerance_s * 1000),
                self.key_starts,
                self.signatures,
                self.key_grace,
            )
            row = await self._judge(accepted, received)
            await self.db.store_proof(
                row, accepted.claims.slot_s, accepted.claims.otp_step_s, accepted.clock_offset_ms
            )
        except verifier.Rejected as exc:
            await self._reject(exc.reason, topic, payload, str(exc))
            if exc.reason == "fork":
                await self._fork(topic, payload, str(exc), received)
            return
        except store.Conflict:
            await self._reject("duplicate", topic, payload, "stored concurrently")
            return
        self.metrics.ingest_seconds.observe(time.perf_counter() - started)
        self._count("late" if accepted.late else "accepted")
        self.hub.publish(
            "proof",
            {
                "site": row.site,
                "room": accepted.claims.room,
                "device": row.device,
                "seq": row.seq,
                "slot": row.slot,
                "iat": row.iat,
                "received_at": row.received_at,
                "gap_before": row.gap_before,
                "late": accepted.late,
                "verdict": row.verdict,
                "reasons": list(row.reasons),
            },
        )
        await self._chain(accepted, received)
        if not accepted.late:
            await self._alerts(row, received)
            await self._clock_alert(row, accepted.clock_offset_ms, received)

    async def _chain(self, accepted: verifier.Accepted, now: int) -> None:
        """Records a gap (and alerts); a late proof that completes every gap clears the alert."""
        row = accepted.row
        if accepted.gap is not None:
            first, last = accepted.gap
            await self.db.add_chain_event(row.site, row.device, "gap", first, last, "", now)
            log.warning("device %s/%s: seq %d..%d missing", row.site, row.device, first, last)
            await self._raise(row.site, row.device, "gap", f"seq {first}..{last} missing", now)
        if accepted.late and await self.db.settle_gaps(row.site, row.device, now) == 0:
            await self._clear(row.site, row.device, "gap", now)

    async def _fork(self, topic: str, payload: bytes, message: str, now: int) -> None:
        """Two validly signed proofs with one seq: the device's key or state was copied."""
        where = topics.parse(topic)
        try:
            _, claims = proof.decode(payload, self.settings.proof_max_bytes)
        except proof.ProofError:
            return
        await self.db.add_chain_event(
            where.site, where.device, "fork", claims.seq, claims.seq, payload.decode("ascii"), now
        )
        log.warning("device %s/%s: %s", where.site, where.device, message)
        await self._raise(where.site, where.device, "fork", message, now)

    async def _clock_alert(self, row: store.ProofRow, offset_ms: int, now: int) -> None:
        limit_ms = self.settings.clock_alert_s * 1000
        if abs(offset_ms) > limit_ms:
            direction = "ahead of" if offset_ms > 0 else "behind"
            reason = f"device clock {abs(offset_ms) / 1000:.1f} s {direction} central"
            await self._raise(row.site, row.device, "clock", reason, now)
        else:
            await self._clear(row.site, row.device, "clock", now)

    async def _raise(self, site: str, device: str, kind: str, reason: str, now: int) -> None:
        raised = await self.db.raise_alert(site, device, kind, reason, now)
        self.open_alerts.add((site, device, kind))
        if raised is not None:
            self.hub.publish("alert", alert_json(raised, "raised"))

    async def _clear(self, site: str, device: str, kind: str, now: int) -> None:
        """Most proofs clear nothing: ask the store only when an alert of that kind is open
        (as this process last knew; refresh_open_alerts catches other processes' alerts)."""
        if (site, device, kind) not in self.open_alerts:
            return
        self.open_alerts.discard((site, device, kind))
        for alert in await self.db.clear_alerts(site, device, kind, now):
            self.hub.publish("alert", alert_json(alert, "cleared"))

    async def refresh_open_alerts(self) -> None:
        found: set[tuple[str, str, str]] = set()
        after = 0
        while True:
            page = await self.db.list_alerts(None, True, 1000, after)
            found.update((a.site, a.device, a.kind) for a in page)
            if len(page) < 1000:
                break
            after = page[-1].id
        self.open_alerts = found

    def forget_room(self, site: str, name: str) -> None:
        self._rooms.pop((site, name), None)

    async def _room(self, site: str, name: str) -> store.Room | None:
        """Rooms change rarely (an admin moving a geofence): cached for ROOM_CACHE_S."""
        cached = self._rooms.get((site, name))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        room = await self.db.get_room(site, name)
        if len(self._rooms) > 50_000:
            self._rooms.clear()
        self._rooms[(site, name)] = (time.monotonic() + ROOM_CACHE_S, room)
        return room

    async def _judge(self, accepted: verifier.Accepted, now: int) -> store.ProofRow:
        """The room verdict of this proof; while the room's profile learns, it learns."""
        claims = accepted.claims
        room = await self._room(claims.site, claims.room)
        profile = await self.db.get_profile(claims.site, claims.room)
        if profile is None:
            profile = environment.Profile(
                claims.site,
                claims.room,
                "learning",
                frozenset(),
                frozenset(),
                self.settings.profile_learn_proofs,
                0,
                {},
            )
        env = claims.env.model_dump(exclude_none=True)
        verdict = environment.judge(
            env,
            room.lat if room else None,
            room.lon if room else None,
            room.radius_m if room else 50.0,
            profile,
        )
        learned = environment.learn(profile, env)
        if learned != profile or profile.learned == 0:
            await self.db.save_profile(learned, now)
            if learned.state == "ready" and profile.state == "learning":
                log.info(
                    "room %s/%s: profile learned, waiting for an admin to confirm it",
                    claims.site,
                    claims.room,
                )
        return dataclasses.replace(
            accepted.row, verdict=verdict.verdict, reasons=tuple(verdict.reasons)
        )

    async def _alerts(self, row: store.ProofRow, now: int) -> None:
        """A mismatch raises "displaced"; a verified proof clears it; any proof clears
        "offline"."""
        if row.verdict == "mismatch":
            reason = "; ".join(row.reasons) or "mismatch"
            await self._raise(row.site, row.device, "displaced", reason, now)
        elif row.verdict == "verified":
            await self._clear(row.site, row.device, "displaced", now)
        await self._clear(row.site, row.device, "offline", now)

    async def watch_silence(self, every_s: float = 10.0) -> None:
        """Raises an "offline" alert for each device that stopped sending proofs."""
        grace_ms = int(self.settings.offline_grace_s * 1000)
        while True:
            await self.refresh_open_alerts()
            now = self.clock.now_ms()
            for device in await self.db.silent_devices(now, grace_ms):
                silent_s = (now - (device.last_proof_at or now)) / 1000
                raised = await self.db.raise_alert(
                    device.site, device.device, "offline", f"no proof for {silent_s:.0f} s", now
                )
                self.open_alerts.add((device.site, device.device, "offline"))
                if raised is not None:
                    log.warning(
                        "device %s/%s offline: %s", device.site, device.device, raised.reason
                    )
                    self.hub.publish("alert", alert_json(raised, "raised"))
            await asyncio.sleep(every_s)

    async def _status(self, where: topics.Topic, payload: bytes) -> None:
        if payload not in (b"online", b"offline"):
            await self._reject(
                "bad_status",
                topics.topic(where.site, where.device, "status"),
                payload,
                "status must be online or offline",
            )
            return
        device = await self.db.get_device(where.site, where.device)
        if device is None:
            return
        online = payload == b"online"
        if await self.db.set_online(where.site, where.device, online, self.clock.now_ms()):
            self.hub.publish(
                "device",
                {
                    "site": where.site,
                    "room": device.room,
                    "device": where.device,
                    "online": online,
                },
            )

    async def _enroll(self, where: topics.Topic, payload: bytes) -> None:
        outcome = await enrollment.handle(
            self.db, self.keys, where.site, where.device, payload, self.clock.now_ms()
        )
        topic = topics.topic(where.site, where.device, "enroll")
        if outcome.reason is not None:
            await self._reject(outcome.reason, topic, payload, outcome.reason)
        if outcome.reply is not None and self._client is not None:
            await self._client.publish(
                topics.topic(where.site, where.device, "cmd"), outcome.reply.encode(), qos=1
            )

    def _count(self, reason: str) -> None:
        self.metrics.proofs.labels(outcome=reason).inc()

    async def _reject(self, reason: str, topic: str, payload: bytes, message: str) -> None:
        self._count(reason)
        log.info(
            "rejected message on %s: %s (%s)",
            topic[:200],
            reason,
            message[:200],
            extra={"topic": topic[:200], "reason": reason},
        )
        await self.db.count_rejection(reason, topic, len(payload), self.clock.now_ms())


def _payload(value: typing.Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return b""


def alert_json(alert: store.Alert, change: str | None = None) -> dict[str, typing.Any]:
    body: dict[str, typing.Any] = {
        "id": alert.id,
        "site": alert.site,
        "device": alert.device,
        "kind": alert.kind,
        "reason": alert.reason,
        "raised_at": alert.raised_at,
        "cleared_at": alert.cleared_at,
        "open": alert.cleared_at is None,
    }
    if change is not None:
        body["change"] = change
    return body
