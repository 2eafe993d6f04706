"""The agent's data path, top to bottom: sensors -> window -> clock -> token + proof -> outbox
-> publisher.

The display follows the same clock beside it. One asyncio process; blocking work (SQLite
fsyncs, PNG encoding, framebuffer writes) runs in threads with clear hand-offs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import pathlib
import sqlite3
import time
import typing

import aiomqtt

from edge_agent import agentclock
from edge_agent import bundle as bundle_mod
from edge_agent import commands
from edge_agent import delivery
from edge_agent import enrollment
from edge_agent import keystore
from edge_agent import metrics
from edge_agent import mqttlink
from edge_agent import outbox as outbox_mod
from edge_agent import sdnotify
from edge_agent import settings as settings_mod
from edge_agent import timesource
from edge_agent import timing as timing_mod
from edge_agent.display import frame
from edge_agent.display import sinks
from edge_agent.protocol import ack
from edge_agent.protocol import b64
from edge_agent.protocol import command
from edge_agent.protocol import enroll
from edge_agent.protocol import keychange
from edge_agent.protocol import proof
from edge_agent.protocol import qrtoken
from edge_agent.protocol import report
from edge_agent.protocol import slots
from edge_agent.protocol import topics
from edge_agent.protocol import totp
from edge_agent.sensors import manager
from edge_agent.sensors import window

log = logging.getLogger("edge_agent")
STORAGE_ERRORS = (sqlite3.Error, OSError)
DISPLAY_STALE_S = 5.0
HEALTH_EVERY_S = 2.0
METRICS_EVERY_S = 5.0
PREPARE_AHEAD_MS = 300  # render + encode of a full-HD frame takes ~40 ms on a Pi 4


class Room:
    """What the room screen shows at a given moment: token URL, code, countdown."""

    def __init__(
        self,
        b: bundle_mod.Bundle,
        device_keys: keystore.DeviceKeys,
        settings: settings_mod.AgentSettings,
    ) -> None:
        self.settings = settings
        self.rekey(b, device_keys)

    def rekey(self, b: bundle_mod.Bundle, device_keys: keystore.DeviceKeys) -> None:
        """New keys (or room): the next token and code come from them."""
        self.bundle = b
        self.keys = device_keys
        self.totp_key = totp.derive_key(
            device_keys.agreement, b64.decode(b.central_x25519), b.site, b.device
        )
        self._signed: tuple[int, bytes] = (-1, b"")

    def token(self, slot: int) -> bytes:
        if self._signed[0] != slot:
            b = self.bundle
            self._signed = (slot, qrtoken.sign(self.keys.signing, b.site, b.device, b.room, slot))
        return self._signed[1]

    def content(self, now_ms: int, status: str, show_tokens: bool = True) -> frame.Content:
        slot_s = self.settings.slot_s
        slot = slots.slot_of(now_ms, slot_s)
        b = self.bundle
        if not show_tokens:
            return frame.Content(
                room_name=b.room_name or b.room,
                url=None,
                code=None,
                seconds_left=(slots.slot_end_ms(slot, slot_s) - now_ms) / 1000,
                slot_s=slot_s,
                status=status,
                slot=slot,
            )
        return frame.Content(
            room_name=b.room_name or b.room,
            url=qrtoken.url(b.public_url, b.site, b.device, slot, self.token(slot)),
            code=totp.totp(
                self.totp_key,
                now_ms / 1000,
                self.settings.otp_step_s,
                digest=self.settings.otp_digest,
            ),
            seconds_left=(slots.slot_end_ms(slot, slot_s) - now_ms) / 1000,
            slot_s=slot_s,
            status=status,
            slot=slot,
        )


def make_sinks(settings: settings_mod.AgentSettings, state_dir: pathlib.Path) -> list[sinks.Sink]:
    made: list[sinks.Sink] = []
    for name in settings.display_sinks:
        if name == "png":
            made.append(sinks.PngSink(settings.png_path or state_dir / "frame.png"))
        elif name == "framebuffer":
            made.append(
                sinks.FramebufferSink(
                    settings.framebuffer_device,
                    settings.framebuffer_width,
                    settings.framebuffer_height,
                    settings.framebuffer_bpp,
                )
            )
        else:
            # Imported only when configured (its page is read at start).
            from edge_agent.display import web

            made.append(web.WebSink(settings.web_host, settings.web_port))
    return made


class Agent:
    def __init__(
        self,
        bundle_path: pathlib.Path,
        state_dir: pathlib.Path,
        settings: settings_mod.AgentSettings,
    ) -> None:
        # A set_timing command from central outlives restarts: it wins over the settings file.
        self.settings = settings.model_copy(update=timing_mod.load(state_dir))
        settings = self.settings
        self.state_dir = state_dir
        self.bundle = bundle_mod.load(bundle_path)
        self.keys = keystore.load(state_dir)
        self.enrollment = enrollment.Enrollment(state_dir, bundle_path, self.bundle, self.keys)
        self.outbox = outbox_mod.Outbox(
            state_dir / "outbox.db", settings.outbox_max_proofs, settings.outbox_max_telemetry
        )
        self.delivery = delivery.Delivery(
            self.outbox, settings.ack_timeout_s, settings.ack_retry_max_s
        )
        self.acks_ignored: collections.Counter[str] = collections.Counter()
        self.previous_public: bytes | None = None  # the key before this run's key change
        found = keystore.staged(state_dir)
        if found is not None:  # a key change that a crash interrupted: finish it
            log.info("finishing a staged key change (%s)", found[1].get("kind"))
            self._finish_key_change(*found)
        self.bundle = self.bundle.model_copy(update={"room": self.enrollment.room})
        self.clock = agentclock.AgentClock(floor_ms=self.outbox.chain_state().iat)
        self.room = Room(self.bundle, self.keys, settings)
        self.window = window.Window(settings.observation_window_s, settings.env_strongest)
        self.sensors = manager.Sensors(settings, self.window.add)
        self.time_status = timesource.current(None)
        self.sinks = make_sinks(settings, state_dir)
        self.boot = os.urandom(8).hex()
        self.started = time.monotonic()
        self.stopping = asyncio.Event()
        self.enrolled = asyncio.Event()
        self.outbox_changed = asyncio.Event()
        self.link_state = "connecting to broker"
        self.queued = 0  # rows not yet published, for the status line
        self.inflight_peak = 0  # the most rows a drain had awaiting their PUBACK at once
        self.storage_error: str | None = None
        self.storage_failures: set[str] = set()
        self.failing_sinks: set[str] = set()
        self.storage_failed_at: float | None = None
        self.last_frame_at: float | None = None  # monotonic; a sink showed a frame
        self.notifier = sdnotify.Notifier.from_env()
        self.commands = commands.Commands(
            state_dir,
            self.bundle.site,
            self.bundle.device,
            b64.decode(self.bundle.central_ed25519),
        )
        self.message: tuple[str, float] | None = None  # text shown until (monotonic)
        self.report_now = asyncio.Event()
        self.needs_enrollment = asyncio.Event()
        # Held while a proof is signed and while keys change: each seq has exactly one key.
        self.key_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self) -> None:
        if self.enrollment.enrolled:
            self.enrolled.set()
        else:
            self.needs_enrollment.set()
        for sink in self.sinks:
            if isinstance(sink, sinks.ServedSink):
                await sink.start()
                log.info("room screen page on http://%s:%d/", sink.host, sink.port)
        self.queued = await asyncio.to_thread(self.outbox.unsent)
        tasks = [
            asyncio.create_task(self._proof_loop(), name="proofs"),
            asyncio.create_task(self._display_loop(), name="display"),
            asyncio.create_task(self._mqtt_loop(), name="mqtt"),
            asyncio.create_task(self._telemetry_loop(), name="telemetry"),
            asyncio.create_task(self.sensors.run(), name="sensors"),
            asyncio.create_task(self._health_loop(), name="health"),
            asyncio.create_task(self._metrics_loop(), name="metrics"),
        ]
        stop = asyncio.create_task(self.stopping.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            self.stopping.set()
            self.notifier.stopping()
            mqtt_task = tasks[2]  # drained last: it publishes `offline` on the way out
            for task in tasks:
                if task is not mqtt_task:
                    task.cancel()
            try:
                await asyncio.wait_for(mqtt_task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                mqtt_task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for sink in self.sinks:
                await sink.close()
            await asyncio.to_thread(self.outbox.close)
            log.info("stopped")

    # -- proofs ----------------------------------------------------------------------------
    @property
    def showing_tokens(self) -> bool:
        return self.time_status.trusted or not self.settings.require_trusted_time

    async def _proof_loop(self) -> None:
        last_iat = self.outbox.chain_state().iat
        while True:
            slot_s = self.settings.slot_s  # a set_timing command may change it
            now = self.clock.now_ms()
            slot = slots.slot_of(now, slot_s)
            self.time_status = timesource.current(self.window.last_gps)
            # One proof per slot, compared by time so that a new slot_s keeps working; after
            # a clock step back, the next proof declares it at once.
            due = (
                last_iat == 0
                or slots.slot_of(last_iat, slot_s) < slot
                or self.clock.pending_step_ms > 0
            )
            if due and self.showing_tokens:
                env = self.window.env(self.sensors.missing())
                clock = self.time_status.claim()
                try:
                    timing = (slot_s, self.settings.otp_step_s)
                    async with self.key_lock:
                        seq = await asyncio.to_thread(
                            self._append_proof, slot, now, env, clock, timing
                        )
                except STORAGE_ERRORS as exc:
                    # Disk full or state dir unwritable: keep showing codes, retry each second.
                    self._storage_failed("proofs paused", exc)
                    await asyncio.sleep(1.0)
                    continue
                self._storage_ok()
                last_iat = now
                self.outbox_changed.set()
                log.debug("proof seq %d for slot %d queued", seq, slot)
            await asyncio.sleep(
                min(1.0, (slots.slot_end_ms(slot, slot_s) - self.clock.now_ms()) / 1000)
            )

    def _storage_failed(self, what: str, exc: BaseException) -> None:
        """Logged once per kind of failure until storage works again (not once a second)."""
        if what not in self.storage_failures:
            log.error("state dir %s: %s (%s); retrying", self.state_dir, what, exc)
            self.storage_failures.add(what)
        if self.storage_failed_at is None:
            self.storage_failed_at = time.monotonic()
        self.storage_error = f"storage full or unwritable: {what}"

    def _storage_ok(self) -> None:
        if self.storage_error is not None:
            log.info("state dir %s writable again; proofs resume", self.state_dir)
            self.storage_error = None
            self.storage_failures.clear()
            self.storage_failed_at = None

    def _append_proof(
        self,
        slot: int,
        now_ms: int,
        env: dict[str, object],
        clock: dict[str, object],
        timing: tuple[int, int],
    ) -> int:
        """Runs in a thread: `timing` (slot_s, otp_step_s) is taken with `slot`, in the loop."""
        b = self.bundle
        slot_s, otp_step_s = timing
        otp_digest = self.settings.otp_digest

        def build(seq: int, prev: str) -> str:
            claims = proof.Claims.model_validate(
                {
                    "site": b.site,
                    "room": b.room,
                    "device": b.device,
                    "seq": seq,
                    "boot": self.boot,
                    "iat": now_ms,
                    "clock": clock,
                    "slot": slot,
                    "slot_s": slot_s,
                    "otp_step_s": otp_step_s,
                    "otp_digest": None if otp_digest == "sha1" else otp_digest,
                    "qr": b64.encode(self.room.token(slot)),
                    "prev": prev,
                    "env": env,
                    "clock_step_ms": step_ms or None,
                }
            )
            return proof.sign(claims, self.keys.signing)

        step_ms = self.clock.pending_step_ms
        seq, _ = self.outbox.append_proof(
            topics.topic(b.site, b.device, "proof"), slot, now_ms, build, step_ms
        )
        self.clock.declared(step_ms)
        self.queued = self.outbox.unsent()
        return seq

    # -- display ---------------------------------------------------------------------------
    def status_line(self) -> str:
        if self.enrollment.rejected:
            return f"enrollment rejected: {self.enrollment.rejected}"
        if not self.showing_tokens:
            return "waiting for time: the clock is not synchronised (NTP or GPS)"
        if self.storage_error is not None:
            return self.storage_error
        if self.clock.stepped_at is not None and time.monotonic() - self.clock.stepped_at < 600:
            return f"clock went back {self.clock.last_step_ms / 1000:.0f} s (it ran ahead)"
        if self.message is not None and time.monotonic() < self.message[1]:
            return self.message[0]
        state = (
            self.link_state
            if self.enrolled.is_set() or self.link_state != "online"
            else "enrolling…"
        )
        return f"{self.bundle.site}/{self.bundle.device} · {state} · {self.queued} queued"

    async def _display_loop(self) -> None:
        width, height = self.settings.frame_width, self.settings.frame_height
        for sink in self.sinks:
            if isinstance(sink, sinks.FramebufferSink):
                width, height = sink.width, sink.height
        # When every sink shows its own countdown (the kiosk page), a frame is rendered and
        # encoded only when something else on it changes: a slot or code step, not a second.
        own_countdown = bool(self.sinks) and all(
            getattr(sink, "draws_countdown", False) for sink in self.sinks
        )
        shown: frame.Content | None = None
        at = self.clock.now_ms()  # the first frame at once, then one per whole second
        while True:
            content = self.room.content(at, self.status_line(), self.showing_tokens)
            if own_countdown:
                content = dataclasses.replace(content, countdown=False)
                still = dataclasses.replace(content, seconds_left=0.0)
                if still == shown and not self.failing_sinks:
                    self.last_frame_at = time.monotonic()  # the screen is still right
                    # At most a second past the next one: the clock may have gone back.
                    following = (self.clock.now_ms() // 1000 + 1) * 1000
                    at = min(max(at + 1000, following), following + 1000)
                    await asyncio.sleep(
                        max(0.0, (at - PREPARE_AHEAD_MS - self.clock.now_ms()) / 1000)
                    )
                    continue
                shown = still
            image = await asyncio.to_thread(frame.render, content, width, height)
            prepared = []
            for sink in self.sinks:
                try:
                    prepared.append((sink, await sink.prepare(image, content)))
                except OSError as exc:
                    self._sink_failed(sink, exc)
            # The sinks hold what they need (PNG bytes, pixels); the frame itself (2 MiB at
            # 1080p) need not stay alive through the seconds this loop sleeps.
            del image
            # Rendered ahead: the frame goes on screen at its second (the slot boundary is
            # one), not a render and an encode later.
            await asyncio.sleep(max(0.0, (at - self.clock.now_ms()) / 1000))
            for sink, data in prepared:
                try:
                    await sink.commit(data)
                except OSError as exc:
                    self._sink_failed(sink, exc)
                else:
                    self.last_frame_at = time.monotonic()
                    name = type(sink).__name__
                    if name in self.failing_sinks:
                        log.info("display sink %s works again", name)
                    self.failing_sinks.discard(name)
            # Prepare the next whole second's frame PREPARE_AHEAD_MS before it is due.
            at = (self.clock.now_ms() // 1000 + 1) * 1000
            await asyncio.sleep(max(0.0, (at - PREPARE_AHEAD_MS - self.clock.now_ms()) / 1000))

    def _sink_failed(self, sink: sinks.Sink, exc: OSError) -> None:
        name = type(sink).__name__
        if name not in self.failing_sinks:
            log.warning("display sink %s failed: %s; retrying each frame", name, exc)
        self.failing_sinks.add(name)

    # -- health (systemd) ------------------------------------------------------------------
    def health_problem(self) -> str | None:
        """Why the agent is unhealthy, or None. The watchdog is fed only while healthy, so
        systemd restarts an agent whose screen froze or whose state dir stayed unwritable."""
        now = time.monotonic()
        if self.last_frame_at is None or now - self.last_frame_at > DISPLAY_STALE_S:
            return "the display has not been updated"
        grace = self.settings.watchdog_storage_grace_s
        if self.storage_failed_at is not None and now - self.storage_failed_at > grace:
            return f"the state dir has been unwritable for over {grace:g} s"
        return None

    async def _health_loop(self) -> None:
        interval = min(self.notifier.watchdog_interval_s or HEALTH_EVERY_S, HEALTH_EVERY_S)
        ready = False
        reported: str | None = None
        while True:
            problem = self.health_problem()
            if not ready and self.last_frame_at is not None:
                self.notifier.ready(self.status_line())
                ready = True
            if problem != reported:
                if problem is not None:
                    log.error("unhealthy: %s; not feeding the systemd watchdog", problem)
                elif reported is not None:
                    log.info("healthy again")
                reported = problem
            if ready:
                self.notifier.status(f"unhealthy: {problem}" if problem else self.status_line())
                if problem is None and self.notifier.watchdog_interval_s is not None:
                    self.notifier.watchdog()
            await asyncio.sleep(interval)

    def snapshot(self) -> metrics.Snapshot:
        chain_state = self.outbox.chain_state()
        return metrics.Snapshot(
            site=self.bundle.site,
            room=self.bundle.room,
            device=self.bundle.device,
            enrolled=self.enrolled.is_set(),
            link_up=self.link_state.startswith("online"),
            last_seq=chain_state.seq,
            last_slot=chain_state.slot,
            outbox=self.outbox.depth(),
            dropped=self.outbox.counters(),
            display_age_s=(
                time.monotonic() - self.last_frame_at if self.last_frame_at is not None else None
            ),
            storage_ok=self.storage_error is None,
            trusted_time=self.time_status.trusted,
            showing_tokens=self.showing_tokens,
            sensors={name: state["status"] for name, state in self.sensors.state().items()},
            uptime_s=time.monotonic() - self.started,
            inflight_peak=self.inflight_peak,
            unacknowledged=self.delivery.unacknowledged,
            acks_taken=self.delivery.acks_taken,
            acks_ignored=dict(self.acks_ignored),
            resent=self.delivery.resent,
        )

    async def _metrics_loop(self) -> None:
        path = self.settings.metrics_file or self.state_dir / metrics.FILE_NAME
        while True:
            try:
                await asyncio.to_thread(metrics.write, path, await asyncio.to_thread(self.snapshot))
            except STORAGE_ERRORS as exc:
                self._storage_failed("metrics not written", exc)
            await asyncio.sleep(METRICS_EVERY_S)

    # -- telemetry -------------------------------------------------------------------------
    async def _telemetry_loop(self) -> None:
        topic = topics.topic(self.bundle.site, self.bundle.device, "telemetry")
        while True:
            with contextlib.suppress(TimeoutError):  # a status_report command wakes it early
                await asyncio.wait_for(self.report_now.wait(), self.settings.telemetry_interval_s)
            self.report_now.clear()
            depth = await asyncio.to_thread(self.outbox.depth)
            claims = report.Telemetry.model_validate(
                {
                    "site": self.bundle.site,
                    "device": self.bundle.device,
                    "iat": self.clock.now_ms(),
                    "boot": self.boot,
                    "uptime_s": round(time.monotonic() - self.started),
                    "outbox_depth": depth,
                    "dropped": await asyncio.to_thread(self.outbox.counters),
                    "clock": {**self.time_status.claim(), **self.clock.state()},
                    "sensors": self.sensors.state(),
                }
            )
            payload = report.sign(claims, self.keys.signing)
            try:
                await asyncio.to_thread(self.outbox.put, outbox_mod.TELEMETRY, topic, payload)
            except STORAGE_ERRORS as exc:
                self._storage_failed("telemetry dropped", exc)
                continue
            self.outbox_changed.set()

    # -- MQTT ------------------------------------------------------------------------------
    def _set_link(self, state: str, detail: str = "") -> None:
        if state != self.link_state:
            self.link_state = state
            log.info("broker %s%s", state, f": {detail}" if detail else "")

    async def _mqtt_loop(self) -> None:
        backoff = mqttlink.Backoff(self.settings.reconnect_max_s)
        b = self.bundle
        status_topic = topics.topic(b.site, b.device, "status")
        while not self.stopping.is_set():
            try:
                # The will and the `online` of one connection share boot and iat: central
                # takes an `offline` only for the session it knows as current.
                connected_at = self.clock.now_ms()
                will = self._status_report("offline", connected_at)
                async with mqttlink.client(
                    b,
                    self.state_dir,
                    self.settings.mqtt_keepalive_s,
                    will,
                    self.settings.mqtt_inflight,
                ) as client:
                    backoff.reset()
                    self._set_link("online", f"{b.mqtt_host}:{b.mqtt_port}")
                    await client.subscribe(topics.topic(b.site, b.device, "cmd"), qos=1)
                    online = self._status_report("online", connected_at)
                    workers = [
                        asyncio.create_task(self._receive(client)),
                        asyncio.create_task(self._enroll(client)),
                        asyncio.create_task(self._drain(client, online)),
                        asyncio.create_task(self._resend_loop()),
                    ]
                    stop = asyncio.create_task(self.stopping.wait())
                    try:
                        done, _ = await asyncio.wait(
                            [*workers, stop], return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        for task in [*workers, stop]:
                            task.cancel()
                        await asyncio.gather(*workers, stop, return_exceptions=True)
                    for task in done:
                        if task is not stop and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
                    if self.stopping.is_set():
                        offline = self._status_report("offline", self.clock.now_ms())
                        await client.publish(status_topic, offline, qos=1, retain=True, timeout=3)
                        return
            except aiomqtt.MqttError as exc:
                self._set_link("unreachable", str(exc))
            except TimeoutError:
                self._set_link("unreachable", "timed out")
            if self.stopping.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff.next_delay())

    def _status_report(self, state: typing.Literal["online", "offline"], iat: int) -> bytes:
        claims = report.Status(
            site=self.bundle.site, device=self.bundle.device, boot=self.boot, iat=iat, state=state
        )
        return report.sign(claims, self.keys.signing)

    async def _receive(self, client: mqttlink.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if ack.is_ack(payload):
                await self._take_ack(payload)
            elif not self.enrolled.is_set():
                if self.enrollment.handle_reply(payload):
                    self.enrolled.set()
            elif command.is_command(payload):
                await self._command(payload)
            else:
                log.info("ignored a message on %s that is not a command", message.topic)

    async def _take_ack(self, payload: bytes) -> None:
        """Central's signed ack: the proofs it settled leave the outbox. Anything not genuine,
        not for this device and key (or the key before a key change of this run), or expired
        is ignored, logged and counted."""
        central = b64.decode(self.bundle.central_ed25519)
        b = self.bundle
        try:
            try:
                found = ack.verify(
                    payload,
                    central,
                    b.site,
                    b.device,
                    self.keys.signing.public,
                    self.clock.now_ms(),
                )
            except ack.AckError as exc:
                if exc.reason != "wrong_key" or self.previous_public is None:
                    raise
                found = ack.verify(
                    payload, central, b.site, b.device, self.previous_public, self.clock.now_ms()
                )
        except ack.AckError as exc:
            self.acks_ignored[exc.reason] += 1
            log.warning("ignored an ack: %s (%s)", exc.reason, exc)
            return
        try:
            await asyncio.to_thread(self.delivery.take, found)
        except STORAGE_ERRORS as exc:
            self._storage_failed("acknowledged proofs cannot be removed", exc)
            return  # the next ack (or a re-send's) settles them
        self.queued = await asyncio.to_thread(self.outbox.unsent)
        self.outbox_changed.set()

    async def _resend_loop(self) -> None:
        """While connected: queue again the sent proofs central is past without settling.
        Checked a few times per timeout, not every second: a long backlog of sent proofs
        (central away for a day) is a dict scan a Pi need not make each second."""
        while True:
            await asyncio.sleep(min(5.0, max(1.0, self.settings.ack_timeout_s / 4)))
            try:
                if await asyncio.to_thread(self.delivery.due, self.clock.now_ms()):
                    self.outbox_changed.set()
            except STORAGE_ERRORS as exc:
                self._storage_failed("proofs cannot be re-sent", exc)

    def _set_timing(self, timing: dict[str, int]) -> None:
        """New rotation period / code step: kept in the state dir (so a restart keeps them),
        applied at once: the next slot of the new length gets the next proof."""
        timing_mod.save(self.state_dir, timing)
        self.settings = self.settings.model_copy(update=timing)
        self.room.settings = self.settings

    async def _command(self, payload: bytes) -> None:
        """Apply a genuine command; report every outcome (as telemetry) so central knows,
        signed with the key held when the command arrived (a key change may follow)."""
        signer = self.keys.signing
        try:
            found = self.commands.check(payload, self.clock.now_ms())
        except command.CommandError as exc:
            log.warning("refused a command: %s (%s)", exc.reason, exc)
            outcome = commands.result(commands.claimed_nonce(payload), None, "rejected", exc.reason)
        else:
            if found.kind == "show_message":
                self.message = (found.args["text"], time.monotonic() + found.args["seconds"])
            elif found.kind == "status_report":
                self.report_now.set()
            elif found.kind == "set_timing":
                self._set_timing(found.args)
            try:
                if found.kind == "rotate_keys":
                    await self._rotate_keys()
                elif found.kind == "re_enroll":
                    await self._re_enroll(found.args)
            except command.CommandError as exc:
                log.warning("refused a command: %s (%s)", exc.reason, exc)
                outcome = commands.result(found.nonce, found.kind, "rejected", exc.reason)
            except STORAGE_ERRORS as exc:
                self._storage_failed("keys not changed", exc)
                outcome = commands.result(found.nonce, found.kind, "rejected", "storage")
            else:
                log.info("applied command %s (%s)", found.kind, found.nonce)
                outcome = commands.result(found.nonce, found.kind, "applied")
        topic = topics.topic(self.bundle.site, self.bundle.device, "telemetry")
        claims = report.CommandResult.model_validate(
            {
                "site": self.bundle.site,
                "device": self.bundle.device,
                "boot": self.boot,
                "iat": self.clock.now_ms(),
                **outcome,
            }
        )
        try:
            await asyncio.to_thread(
                self.outbox.put, outbox_mod.TELEMETRY, topic, report.sign(claims, signer)
            )
        except STORAGE_ERRORS as exc:
            self._storage_failed("command result dropped", exc)
            return
        self.outbox_changed.set()

    async def _enroll(self, client: mqttlink.Client) -> None:
        """(Re-)enrollment: the request again and again until central's signed answer."""
        b = self.bundle
        while True:
            await self.needs_enrollment.wait()
            if self.enrolled.is_set():
                self.needs_enrollment.clear()
                continue
            log.info("asking central to enroll %s/%s", b.site, b.device)
            await client.publish(
                topics.topic(b.site, b.device, "enroll"), self.enrollment.request, qos=1
            )
            retry = self.settings.enroll_retry_s * (6 if self.enrollment.rejected else 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.enrolled.wait(), retry)

    # -- key changes -----------------------------------------------------------------------
    def _finish_key_change(self, new: keystore.DeviceKeys, intent: dict[str, typing.Any]) -> None:
        """Carry out a staged key change (again, after a crash: each step is idempotent), then
        switch to the new keys. Blocking: call it in a thread or before the loop starts."""
        b = self.bundle
        if intent.get("kind") == "rotate":
            # In the outbox, after every proof signed with the old key and before the first
            # signed with the new one: central learns of the key before it needs it. A
            # repeat after a crash is refused by central as a replay, harmlessly.
            topic = topics.topic(b.site, b.device, "enroll")
            self.outbox.put(outbox_mod.PROOF, topic, str(intent["message"]).encode("ascii"))
        elif intent.get("kind") == "re_enroll":
            self.enrollment.restart(str(intent["request"]).encode())
        keystore.promote(self.state_dir, new)
        # Until central has taken the key change, its acks name the key before it.
        self.previous_public = self.keys.signing.public
        self.keys = new
        self.bundle = self.bundle.model_copy(update={"room": self.enrollment.room})

    def _switched(self) -> None:
        self.room.rekey(self.bundle, self.keys)
        if not self.enrollment.enrolled:
            self.enrolled.clear()
            self.needs_enrollment.set()
        self.outbox_changed.set()

    async def _change_keys(self, new: keystore.DeviceKeys, intent: dict[str, typing.Any]) -> None:
        """Stage, then finish; called with key_lock held. A failed stage changes nothing (the
        command is refused); once staged, the change is finished whatever it takes (retried
        each second on a full disk, proofs held meanwhile), because its announcement may
        already be on its way to central."""
        try:
            await asyncio.to_thread(keystore.stage, self.state_dir, new, intent)
        except STORAGE_ERRORS:
            with contextlib.suppress(OSError):
                (self.state_dir / "keys" / keystore.STAGED).unlink(missing_ok=True)
            raise
        while True:
            try:
                await asyncio.to_thread(self._finish_key_change, new, intent)
                break
            except STORAGE_ERRORS as exc:
                self._storage_failed("key change pending", exc)
                await asyncio.sleep(1.0)
        self._storage_ok()
        self._switched()

    async def _rotate_keys(self) -> None:
        b = self.bundle
        async with self.key_lock:
            new = keystore.generate()
            from_seq = self.outbox.chain_state().seq + 1
            message = keychange.sign(
                self.keys.signing,
                new.signing,
                new.agreement.public,
                b.site,
                b.room,
                b.device,
                from_seq,
                self.clock.now_ms(),
            )
            intent = {"kind": "rotate", "from_seq": from_seq, "message": message}
            await self._change_keys(new, intent)
        log.info("keys rotated: seq %d on is signed with the new key", from_seq)

    async def _re_enroll(self, args: dict[str, typing.Any]) -> None:
        b = self.bundle
        code = command.open_code(self.keys.agreement, args["code"])
        room = args.get("room", b.room)
        async with self.key_lock:
            new = keystore.generate()
            from_seq = self.outbox.chain_state().seq + 1
            request = enroll.sign_request(
                code,
                b.site,
                room,
                b.device,
                new.signing,
                new.agreement.public,
                from_seq,
                ts=self.clock.now_ms(),
            )
            intent = {"kind": "re_enroll", "from_seq": from_seq, "request": request.decode()}
            await self._change_keys(new, intent)
        log.info("re-enrolling in room %s: seq %d on is signed with the new key", room, from_seq)

    async def _published(self, item: outbox_mod.Item) -> None:
        """The broker took `item`: delete it, or mark a proof sent until central's ack (see
        `delivery`); on a full disk retry that, never the publish."""
        while True:
            try:
                await asyncio.to_thread(self.delivery.published, item)
                return
            except STORAGE_ERRORS as exc:
                self._storage_failed("acknowledged rows cannot be removed", exc)
                await asyncio.sleep(1.0)

    async def _drain(self, client: mqttlink.Client, online: bytes) -> None:
        """Publish the outbox in order; a row leaves only after a PUBACK that says a
        subscriber (central) will get it, and a proof only once central acknowledged it
        (`delivery`). "No matching subscribers" keeps it for a retry.
        Up to `mqtt_inflight` rows are in flight at once (sent, PUBACK awaited, in order),
        so a backlog drains at the link's bandwidth, not one row per round trip.
        Once enrolled and drained, this connection's signed `online` (retained): central
        then knows the key that signed it (an enrollment, or a key change queued in the
        outbox, came first)."""
        waiting = mqttlink.Backoff(5.0)
        b = self.bundle
        while True:
            await self.enrolled.wait()  # a re-enrollment pauses the drain until central answers
            self.outbox_changed.clear()
            items = await asyncio.to_thread(
                self.outbox.peek, max(50, 2 * self.settings.mqtt_inflight)
            )
            if not items:
                if online:
                    status_topic = topics.topic(b.site, b.device, "status")
                    await client.publish(status_topic, online, qos=1, retain=True)
                    online = b""
                await self.outbox_changed.wait()
                continue
            if not await self._publish_window(client, items, waiting):
                await asyncio.sleep(waiting.next_delay())
            self.queued = await asyncio.to_thread(self.outbox.unsent)

    async def _publish_window(
        self,
        client: mqttlink.Client,
        items: list[outbox_mod.Item],
        waiting: mqttlink.Backoff,
    ) -> bool:
        """Publish `items` in order with up to `mqtt_inflight` awaiting their PUBACK; delete
        each accepted row in order. False at the first row the broker did not accept: it and
        the rows after it stay (those already sent come again; central ignores duplicates)."""
        window = self.settings.mqtt_inflight
        pending: collections.deque[tuple[outbox_mod.Item, mqttlink.Sent]] = collections.deque()
        queue = collections.deque(items)
        while queue or pending:
            while queue and len(pending) < window:
                item = queue.popleft()
                pending.append((item, client.start_publish(item.topic, item.payload)))
            self.inflight_peak = max(self.inflight_peak, len(pending))
            item, info = pending.popleft()
            reason = await client.wait_acked(info)
            if reason == mqttlink.NO_MATCHING_SUBSCRIBERS or reason >= 0x80:
                for _, later in pending:
                    client.abandon(later)
                if reason == mqttlink.NO_MATCHING_SUBSCRIBERS:
                    self._set_link("online, central not subscribed")
                else:
                    log.warning("broker refused %s (reason %d); will retry", item.topic, reason)
                return False
            waiting.reset()
            self._set_link("online")
            await self._published(item)
        return True
