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
import logging
import random
import ssl
import time
import typing

import aiomqtt
import paho.mqtt.packettypes
import paho.mqtt.properties

from central.core import clock as clock_mod
from central.core import events
from central.core import keyring
from central.core import metrics
from central.core import outage
from central.core import settings as settings_mod
from central.core import sigpool
from central.domain import environment
from central.ingest import acks as acks_mod
from central.ingest import devicecmd
from central.ingest import enrollment
from central.ingest import verifier
from central.storage import database
from central.storage import store
from central.storage import stores
from edge_agent.protocol import proof
from edge_agent.protocol import report
from edge_agent.protocol import topics

log = logging.getLogger(__name__)
SESSION_EXPIRY_S = 24 * 3600
PIPELINE_WINDOW = 64
ROOM_CACHE_S = 5.0


def _store_failed(exc: BaseException) -> None:
    """One log line when the store goes down (the tracker logs it), none per reconnect after."""
    if not outage.STORE.down:
        log.error("store unavailable (%s); reconnecting to get the message again", exc)
    outage.STORE.failed(exc)


def _reconnect_wait(attempt: int) -> float:
    """Jittered exponential backoff: capped at 10 s for the broker, and growing further (to
    outage.BACKOFF_CAP_S) while the store is down, whose failures a reconnect resets no count of."""
    ceiling = min(10.0, 0.5 * 2**attempt)
    ceiling = max(ceiling, outage.STORE.backoff_s())
    return random.uniform(ceiling / 2, ceiling)


class StoreUnavailable(Exception):
    """The store failed even to count a rejection: the database is down, not the message."""


class BrokerOpen(Exception):
    """The broker lets a client without credentials connect, and that was not allowed."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"the MQTT broker {url} accepts clients without credentials (anyone could read"
            " commands and publish as a device): give it accounts (e.g. broker_dynsec), or set"
            " allow_anonymous_broker = true"
        )


def _tls(settings: settings_mod.CentralSettings) -> ssl.SSLContext | None:
    if not settings.mqtt_host_port()[2]:
        return None
    return ssl.create_default_context(cafile=str(settings.mqtt_ca) if settings.mqtt_ca else None)


async def anonymous_allowed(settings: settings_mod.CentralSettings) -> bool | None:
    """Whether the broker lets a client in without username and password: True, False (it
    refused), or None (not reachable now, so not known)."""
    host, port, _ = settings.mqtt_host_port()
    try:
        async with aiomqtt.Client(
            host,
            port,
            identifier=f"central-probe-{random.getrandbits(48):012x}",
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=_tls(settings),
            timeout=10,
        ):
            return True
    except aiomqtt.exceptions.MqttConnectError:
        return False  # the broker answered, with a CONNACK that refuses the client
    except aiomqtt.MqttError:
        return None  # no answer: unreachable, or the connection broke


async def check_broker(settings: settings_mod.CentralSettings) -> bool | None:
    """BrokerOpen on an anonymous broker unless `allow_anonymous_broker`, then a warning;
    the probe's answer otherwise (None: the broker could not be reached)."""
    anonymous = await anonymous_allowed(settings)
    if anonymous and not settings.allow_anonymous_broker:
        raise BrokerOpen(settings.mqtt_url)
    if anonymous:
        log.warning(
            "SECURITY: the MQTT broker %s accepts anonymous clients and allow_anonymous_broker"
            " is set: anyone who reaches it can read commands and disturb devices' status;"
            " only for tests and closed labs",
            settings.mqtt_url,
        )
    return anonymous


class Bridge:
    def __init__(
        self,
        settings: settings_mod.CentralSettings,
        db: database.Database,
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
        self._telemetry_iat: dict[tuple[str, str], int] = {}
        # Per device, the session of the last status taken: (boot, iat, 0 online / 1 offline).
        self._sessions: dict[tuple[str, str], tuple[str, int, int]] = {}
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
        self.acks = (
            acks_mod.Acker(
                db,
                keys,
                self.clock,
                settings.ack_interval_s,
                self._publish_cmd,
                self.metrics.acks.inc,
            )
            if settings.device_acks
            else None
        )
        # The anonymous-broker check (`check_broker`): None until it got an answer.
        self.broker_checked: bool | None = None

    def _client_options(self) -> aiomqtt.Client:
        host, port, _ = self.settings.mqtt_host_port()
        context = _tls(self.settings)
        # paho's Properties() has no annotations (a third-party gap).
        properties = paho.mqtt.properties.Properties(  # type: ignore[no-untyped-call]
            paho.mqtt.packettypes.PacketTypes.CONNECT
        )
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
                if self.broker_checked is None:  # the broker was not reachable at start
                    self.broker_checked = await check_broker(self.settings)
                    if self.broker_checked is None:  # connect only once it has answered
                        raise aiomqtt.MqttError("the broker did not answer")
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
            except BrokerOpen as exc:
                log.critical("%s; not taking messages from it", exc)
                self.broker_checked = None  # asked again after the backoff
            except StoreUnavailable as exc:
                # Unacknowledged, the message stays with the broker (persistent session) and
                # comes again after the reconnect.
                _store_failed(exc)
            finally:
                self.connected = False
                self._client = None
            attempt += 1
            await asyncio.sleep(_reconnect_wait(attempt))

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
                outage.STORE.succeeded()
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
        """Kept in memory, per process: the device's latest health (for /metrics and the API).
        Only signed by the device, and only newer than the last one kept (no replays)."""
        try:
            device, claims = await verifier.verify_report(
                self.db,
                topic,
                payload,
                frozenset({report.TELEMETRY, report.COMMAND_RESULT}),
                self.clock.now_ms(),
                int(self.settings.clock_tolerance_s * 1000),
            )
        except verifier.Rejected as exc:
            await self._reject(exc.reason, topic, payload, str(exc))
            return
        if isinstance(claims, report.CommandResult):
            self._command_result(where, claims)
            return
        if not isinstance(claims, report.Telemetry):
            return
        key = (where.site, where.device)
        if claims.iat <= self._telemetry_iat.get(key, -1):
            await self._reject("stale", topic, payload, "telemetry older than the last kept")
            return
        self._telemetry_iat[key] = claims.iat
        self.telemetry[key] = {
            "received_at": self.clock.now_ms(),
            "outbox_depth": dict(claims.outbox_depth),
            "uptime_s": claims.uptime_s,
            "sensors": claims.sensors,
            "clock": claims.clock,
        }
        proofs = claims.outbox_depth.get("proof", 0)
        self.metrics.outbox_depth.labels(site=device.site, device=device.device).set(proofs)

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

    async def _publish_cmd(self, topic: str, payload: bytes) -> None:
        if self._client is None:
            raise ConnectionError("central is not connected to the broker")
        await self._client.publish(topic, payload, qos=1)

    def _settle_refused(self, topic: str, payload: bytes, exc: verifier.Rejected) -> None:
        """A validly signed proof refused for good is acked as settled (else it would stay
        in the device's outbox forever); one from the future as pending."""
        if self.acks is None or (exc.reason not in acks_mod.SETTLED_REASONS):
            return
        try:
            where = topics.parse(topic)
            _, claims = proof.decode(payload, self.settings.proof_max_bytes)
        except (ValueError, proof.ProofError):
            return
        if exc.transient:
            self.acks.pending(where.site, where.device, claims.seq)
        else:
            self.acks.settled(where.site, where.device, claims.seq)

    def _command_result(self, where: topics.Topic, claims: report.CommandResult) -> None:
        for sent in self.commands.get((where.site, where.device), ()):
            if sent["nonce"] == claims.nonce:
                sent["outcome"], sent["reason"] = claims.outcome, claims.reason
        self.hub.publish(
            "command",
            {
                "site": where.site,
                "device": where.device,
                "nonce": claims.nonce,
                "outcome": claims.outcome,
                "reason": claims.reason,
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
                row,
                accepted.claims.slot_s,
                accepted.claims.otp_step_s,
                accepted.clock_offset_ms,
                accepted.claims.otp_digest or "sha1",
            )
        except verifier.Rejected as exc:
            await self._reject(exc.reason, topic, payload, str(exc))
            self._settle_refused(topic, payload, exc)
            if exc.reason == "fork":
                await self._fork(topic, payload, str(exc), received)
            if exc.reason == "clock":
                await self._clock_rejected(topic, str(exc), received)
            return
        except store.Conflict:
            await self._reject("duplicate", topic, payload, "stored concurrently")
            if self.acks is not None:
                self.acks.settled(accepted.row.site, accepted.row.device, accepted.row.seq)
            return
        if self.acks is not None:
            self.acks.settled(row.site, row.device, row.seq)
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
            if self.acks is not None:
                self.acks.missing(row.site, row.device, first, last)
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

    async def _clock_rejected(self, topic: str, message: str, now: int) -> None:
        """A proof refused for its time (from the future beyond tolerance, or going back)
        raises the device's `clock` alert at once: it is the reason the room went quiet
        (issue 14, D2). The topic names the device; a bad topic never reaches here."""
        where = topics.parse(topic)
        log.warning("device %s/%s: proof refused, %s", where.site, where.device, message)
        await self._raise(where.site, where.device, "clock", f"proof refused: {message}", now)

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
        """A signed `online`/`offline` (see `protocol.report`). Per device, central keeps the
        session (boot, iat) of the last status it took: a status older than that is stale,
        and an `offline` counts only for the current boot (of the newer of that status and
        the last stored proof), so an old will cannot end a new session."""
        topic = topics.topic(where.site, where.device, "status")
        try:
            device, claims = await verifier.verify_report(
                self.db,
                topic,
                payload,
                frozenset({report.STATUS}),
                self.clock.now_ms(),
                int(self.settings.clock_tolerance_s * 1000),
            )
        except verifier.Rejected as exc:
            await self._reject(exc.reason, topic, payload, str(exc))
            return
        if not isinstance(claims, report.Status):
            return
        key = (where.site, where.device)
        online = claims.state == "online"
        order = (claims.iat, 0 if online else 1)  # at one iat, the will ends its session
        known = self._sessions.get(key)
        if known is not None and order <= (known[1], known[2]):
            await self._reject("stale", topic, payload, "status older than the session's")
            return
        # The current session: the newer of this process's last status and the last stored
        # proof (another process, or this one before a restart, may have taken the status).
        current = known[:2] if known is not None else None
        last = await self._last_proof_session(device)
        if last is not None and (current is None or last[1] > current[1]):
            current = last
        # Of another boot, an `online` counts when newer than all we know (the device
        # restarted), an `offline` never (an old will).
        if current is not None and claims.boot != current[0]:
            if not online or claims.iat <= current[1]:
                await self._reject("stale", topic, payload, "status of an earlier boot")
                return
        if len(self._sessions) > 100_000:
            self._sessions.clear()
        self._sessions[key] = (claims.boot, claims.iat, order[1])
        if online and self.acks is not None:
            await self.acks.online(where.site, where.device)
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

    async def _last_proof_session(self, device: store.Device) -> tuple[str, int] | None:
        """(boot, iat) of the device's last stored proof, if any."""
        if device.last_seq < 1:
            return None
        row = await self.db.get_proof(device.site, device.device, device.last_seq)
        if row is None:
            return None
        try:
            _, claims = proof.decode(row.jws, len(row.jws))
        except proof.ProofError:
            return None
        return claims.boot, claims.iat

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
            if outcome.reason is None and self.acks is not None:
                await self.acks.online(where.site, where.device)

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
