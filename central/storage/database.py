"""The store central runs on, on SQLite or PostgreSQL alike: each method runs one query of
queries.py through the engine (engines.py). The rest of central is typed against this class."""

from __future__ import annotations

import pathlib
import typing

from central.domain import environment
from central.domain import timetable
from central.storage import engines
from central.storage import queries
from central.storage import store


class Database:
    def __init__(self, engine: engines.Sqlite | engines.Postgres) -> None:
        self.engine = engine

    @classmethod
    def sqlite(cls, path: pathlib.Path) -> Database:
        """The embedded store: one SQLite file (one central process per site)."""
        return cls(engines.Sqlite(path))

    @classmethod
    def postgres(cls, dsn: str) -> Database:
        """The shared store: several central processes on one PostgreSQL database."""
        return cls(engines.Postgres(dsn))

    @property
    def path(self) -> pathlib.Path | None:
        return self.engine.path if isinstance(self.engine, engines.Sqlite) else None

    @property
    def dsn(self) -> str | None:
        return self.engine.dsn if isinstance(self.engine, engines.Postgres) else None

    async def open(self) -> None:
        """Connects and migrates (Alembic, to the head revision)."""
        await self.engine.open()

    async def close(self) -> None:
        await self.engine.close()

    async def add_site(self, site: str, name: str) -> None:
        return await self.engine.write(queries.add_site, site, name)

    async def add_room(
        self,
        site: str,
        room: str,
        name: str,
        lat: float | None,
        lon: float | None,
        radius_m: float,
    ) -> None:
        return await self.engine.write(queries.add_room, site, room, name, lat, lon, radius_m)

    async def get_room(self, site: str, room: str) -> store.Room | None:
        return await self.engine.read(queries.get_room, site, room)

    async def update_room(
        self, site: str, room: str, lat: float | None, lon: float | None, radius_m: float
    ) -> None:
        return await self.engine.write(queries.update_room, site, room, lat, lon, radius_m)

    async def add_device(
        self, site: str, room: str, device: str, code: str, expires_ms: int
    ) -> None:
        return await self.engine.write(queries.add_device, site, room, device, code, expires_ms)

    async def get_device(self, site: str, device: str) -> store.Device | None:
        return await self.engine.read(queries.get_device, site, device)

    async def list_devices(self, site: str | None = None) -> list[store.Device]:
        return await self.engine.read(queries.list_devices, site)

    async def room_devices(self, site: str, room: str) -> list[store.Device]:
        return await self.engine.read(queries.room_devices, site, room)

    async def bind_device(
        self,
        site: str,
        device: str,
        ed25519: bytes,
        x25519: bytes,
        now_ms: int,
        evidence: str = "",
        note: str = "",
    ) -> None:
        return await self.engine.write(
            queries.bind_device, site, device, ed25519, x25519, now_ms, evidence, note
        )

    async def set_online(self, site: str, device: str, online: bool, now_ms: int) -> bool:
        return await self.engine.write(queries.set_online, site, device, online, now_ms)

    async def revoke_device(self, site: str, device: str) -> bool:
        return await self.engine.write(queries.revoke_device, site, device)

    async def device_keys(self, site: str, device: str) -> list[store.DeviceKey]:
        return await self.engine.read(queries.device_keys, site, device)

    async def device_key_at(self, site: str, device: str, seq: int) -> store.DeviceKey | None:
        return await self.engine.read(queries.device_key_at, site, device, seq)

    async def change_device_keys(
        self,
        key: store.DeviceKey,
        previous: bytes,
        code: str | None,
    ) -> None:
        return await self.engine.write(queries.change_device_keys, key, previous, code)

    async def arm_reenroll(
        self, site: str, device: str, code: str, expires_ms: int, room: str
    ) -> bool:
        return await self.engine.write(queries.arm_reenroll, site, device, code, expires_ms, room)

    async def reenroll_room(self, site: str, device: str) -> str | None:
        return await self.engine.read(queries.reenroll_room, site, device)

    async def store_proof(
        self,
        row: store.ProofRow,
        slot_s: int,
        otp_step_s: int,
        clock_offset_ms: int,
        otp_digest: str = "sha1",
    ) -> None:
        return await self.engine.batched(
            queries.store_proof, row, slot_s, otp_step_s, clock_offset_ms, otp_digest
        )

    async def proof_hash(self, site: str, device: str, seq: int) -> str | None:
        return await self.engine.read(queries.proof_hash, site, device, seq)

    async def get_proof(self, site: str, device: str, seq: int) -> store.ProofRow | None:
        return await self.engine.read(queries.get_proof, site, device, seq)

    async def proof_for_slot(self, site: str, device: str, slot: int) -> store.ProofRow | None:
        return await self.engine.read(queries.proof_for_slot, site, device, slot)

    async def add_chain_event(
        self, site: str, device: str, kind: str, first: int, last: int, detail: str, now_ms: int
    ) -> store.ChainEvent:
        return await self.engine.write(
            queries.add_chain_event, site, device, kind, first, last, detail, now_ms
        )

    async def settle_gaps(self, site: str, device: str, now_ms: int) -> int:
        return await self.engine.write(queries.settle_gaps, site, device, now_ms)

    async def list_chain_events(
        self, site: str | None, device: str | None, limit: int, after_id: int
    ) -> list[store.ChainEvent]:
        return await self.engine.read(queries.list_chain_events, site, device, limit, after_id)

    async def list_proofs(
        self, site: str | None, device: str, limit: int, before_seq: int | None = None
    ) -> list[store.ProofRow]:
        return await self.engine.read(queries.list_proofs, site, device, limit, before_seq)

    async def get_profile(self, site: str, room: str) -> environment.Profile | None:
        return await self.engine.read(queries.get_profile, site, room)

    async def save_profile(self, profile: environment.Profile, now_ms: int) -> None:
        return await self.engine.write(queries.save_profile, profile, now_ms)

    async def list_rooms(self, site: str | None) -> list[store.Room]:
        return await self.engine.read(queries.list_rooms, site)

    async def raise_alert(
        self, site: str, device: str, kind: str, reason: str, now_ms: int
    ) -> store.Alert | None:
        """A new open alert, or None when one of that kind is already open."""
        try:
            return await self.engine.write(queries.raise_alert, site, device, kind, reason, now_ms)
        except store.Conflict:
            return None

    async def clear_alerts(
        self, site: str, device: str, kind: str, now_ms: int
    ) -> list[store.Alert]:
        return await self.engine.write(queries.clear_alerts, site, device, kind, now_ms)

    async def list_alerts(
        self, site: str | None, open_only: bool, limit: int, after_id: int, kind: str | None = None
    ) -> list[store.Alert]:
        return await self.engine.read(queries.list_alerts, site, open_only, limit, after_id, kind)

    async def silent_devices(self, now_ms: int, grace_ms: int) -> list[store.Device]:
        return await self.engine.read(queries.silent_devices, now_ms, grace_ms)

    async def clear_alert(self, alert_id: int, now_ms: int) -> store.Alert | None:
        return await self.engine.write(queries.clear_alert, alert_id, now_ms)

    async def count_rejection(self, reason: str, topic: str, size: int, now_ms: int) -> None:
        return await self.engine.write(queries.count_rejection, reason, topic, size, now_ms)

    async def rejections(self) -> tuple[dict[str, int], list[dict[str, typing.Any]]]:
        return await self.engine.read(queries.rejections)

    async def add_student(self, site: str, student_id: str, pin_hash: str) -> None:
        return await self.engine.write(queries.add_student, site, student_id, pin_hash)

    async def get_student(self, site: str, student_id: str) -> store.Student | None:
        return await self.engine.read(queries.get_student, site, student_id)

    async def purge_before(self, before_ms: int) -> dict[str, int]:
        return await self.engine.write(queries.purge_before, before_ms)

    async def erase_student(self, site: str, student_id: str) -> dict[str, int]:
        return await self.engine.write(queries.erase_student, site, student_id)

    async def add_credential(
        self, credential_id: str, site: str, student_id: str, now_ms: int, expires_ms: int
    ) -> None:
        return await self.engine.write(
            queries.add_credential, credential_id, site, student_id, now_ms, expires_ms
        )

    async def credential_active(self, credential_id: str, now_ms: int) -> bool:
        return await self.engine.read(queries.credential_active, credential_id, now_ms)

    async def revoke_credential(self, credential_id: str) -> None:
        return await self.engine.write(queries.revoke_credential, credential_id)

    async def add_admin_token(
        self,
        token_hash: str,
        role: str,
        name: str,
        now_ms: int,
        courses: tuple[tuple[str, str], ...] = (),
        site: str | None = None,
    ) -> None:
        return await self.engine.write(
            queries.add_admin_token, token_hash, role, name, now_ms, courses, site
        )

    async def token_courses(self, token_hash: str) -> frozenset[tuple[str, str]]:
        return await self.engine.read(queries.token_courses, token_hash)

    async def admin_role(self, token_hash: str) -> str | None:
        return await self.engine.read(queries.admin_role, token_hash)

    async def admin_grant(self, token_hash: str) -> store.TokenGrant | None:
        return await self.engine.read(queries.admin_grant, token_hash)

    async def list_admin_tokens(self, site: str | None = None) -> list[store.AdminToken]:
        return await self.engine.read(queries.list_admin_tokens, site)

    async def set_token_site(self, token_id: str, role: str, site: str | None) -> bool:
        return await self.engine.write(queries.set_token_site, token_id, role, site)

    async def audit(
        self,
        actor: str,
        action: str,
        target: str,
        detail: str,
        now_ms: int,
        site: str | None = None,
    ) -> None:
        return await self.engine.write(queries.audit, actor, action, target, detail, now_ms, site)

    async def list_audit(
        self, limit: int, after_id: int, site: str | None = None
    ) -> list[store.AuditEntry]:
        return await self.engine.read(queries.list_audit, limit, after_id, site)

    async def revoke_admin_token(self, token_id: str, site: str | None = None) -> bool:
        return await self.engine.write(queries.revoke_admin_token, token_id, site)

    async def add_checkin(self, new: store.NewCheckin) -> store.Checkin:
        return await self.engine.write(queries.add_checkin, new)

    async def record_checkin(
        self, context: store.CheckinContext, decide: store.DecideCheckin
    ) -> store.Checkin:
        return await self.engine.batched(queries.record_checkin, context, decide)

    async def get_checkin(self, checkin_id: int) -> store.Checkin | None:
        return await self.engine.read(queries.get_checkin, checkin_id)

    async def list_checkins(
        self,
        site: str | None,
        room: str | None,
        since_ms: int | None,
        limit: int,
        after_id: int = 0,
        student_id: str | None = None,
        courses: frozenset[tuple[str, str]] | None = None,
    ) -> list[store.Checkin]:
        return await self.engine.read(
            queries.list_checkins, site, room, since_ms, limit, after_id, student_id, courses
        )

    async def occurrence_checkins(self, session_id: int, session_date: str) -> list[store.Checkin]:
        return await self.engine.read(queries.occurrence_checkins, session_id, session_date)

    async def browser_students(
        self,
        browser: str,
        student_id: str,
        session_id: int | None,
        session_date: str | None,
        room: str,
        since_ms: int,
    ) -> int:
        return await self.engine.read(
            queries.browser_students, browser, student_id, session_id, session_date, room, since_ms
        )

    async def set_checkout(self, checkin_id: int, now_ms: int) -> bool:
        return await self.engine.write(queries.set_checkout, checkin_id, now_ms)

    async def set_record_jws(self, checkin_id: int, record_jws: str) -> str:
        return await self.engine.write(queries.set_record_jws, checkin_id, record_jws)

    async def add_course(self, course: store.Course) -> None:
        return await self.engine.write(queries.add_course, course)

    async def site_exists(self, site: str) -> bool:
        return await self.engine.read(queries.site_exists, site)

    async def set_student_pin(self, site: str, student_id: str, pin_hash: str) -> bool:
        return await self.engine.write(queries.set_student_pin, site, student_id, pin_hash)

    async def update_course(self, course: store.Course) -> bool:
        return await self.engine.write(queries.update_course, course)

    async def update_session(self, session: timetable.Session) -> bool:
        try:
            return await self.engine.write(queries.update_session, session)
        except store.Conflict as exc:
            raise store.NotFound("the room does not exist") from exc

    async def get_course(self, site: str, course: str) -> store.Course | None:
        return await self.engine.read(queries.get_course, site, course)

    async def list_courses(self, site: str | None) -> list[store.Course]:
        return await self.engine.read(queries.list_courses, site)

    async def set_roster(self, site: str, course: str, students: list[str]) -> None:
        return await self.engine.write(queries.set_roster, site, course, students)

    async def roster(self, site: str, course: str) -> list[str]:
        return await self.engine.read(queries.roster, site, course)

    async def courses_of(self, site: str, student_id: str) -> list[str]:
        return await self.engine.read(queries.courses_of, site, student_id)

    async def add_session(self, session: timetable.Session) -> timetable.Session:
        try:
            return await self.engine.write(queries.add_session, session)
        except store.Conflict as exc:
            raise store.NotFound("the course or room does not exist") from exc

    async def get_session(self, session_id: int) -> timetable.Session | None:
        return await self.engine.read(queries.get_session, session_id)

    async def list_sessions(
        self,
        site: str | None,
        course: str | None,
        room: str | None,
        limit: int,
        after_id: int,
    ) -> list[timetable.Session]:
        return await self.engine.read(queries.list_sessions, site, course, room, limit, after_id)

    async def set_override(self, override: store.Override) -> None:
        return await self.engine.write(queries.set_override, override)

    async def overrides(self, session_id: int, session_date: str) -> list[store.Override]:
        return await self.engine.read(queries.overrides, session_id, session_date)

    async def add_link(
        self, token_hash: str, checkin_id: int, now_ms: int, expires_ms: int
    ) -> store.VerifyLink:
        return await self.engine.write(queries.add_link, token_hash, checkin_id, now_ms, expires_ms)

    async def find_link(self, token_hash: str) -> store.VerifyLink | None:
        return await self.engine.read(queries.find_link, token_hash)

    async def get_link(self, link_id: int) -> store.VerifyLink | None:
        return await self.engine.read(queries.get_link, link_id)

    async def revoke_link(self, link_id: int, now_ms: int) -> bool:
        return await self.engine.write(queries.revoke_link, link_id, now_ms)

    async def add_webhook(
        self,
        url: str,
        events: tuple[str, ...],
        description: str,
        secret: str,
        now_ms: int,
        site: str | None = None,
    ) -> store.Webhook:
        return await self.engine.write(
            queries.add_webhook, url, events, description, secret, now_ms, site
        )

    async def list_webhooks(self, site: str | None = None) -> list[store.Webhook]:
        return await self.engine.read(queries.list_webhooks, site)

    async def delete_webhook(self, webhook_id: int) -> bool:
        return await self.engine.write(queries.delete_webhook, webhook_id)

    async def enqueue_webhook_event(
        self, event_id: str, event_type: str, body: str, now_ms: int, site: str | None = None
    ) -> int:
        return await self.engine.write(
            queries.enqueue_webhook_event, event_id, event_type, body, now_ms, site
        )

    async def webhooks_due(self, now_ms: int) -> list[int]:
        return await self.engine.read(queries.webhooks_due, now_ms)

    async def due_webhook_deliveries(
        self, webhook_id: int, now_ms: int, limit: int
    ) -> list[store.WebhookDelivery]:
        return await self.engine.read(queries.due_webhook_deliveries, webhook_id, now_ms, limit)

    async def claim_webhook_delivery(self, delivery_id: int, due_ms: int, until_ms: int) -> bool:
        return await self.engine.write(
            queries.claim_webhook_delivery, delivery_id, due_ms, until_ms
        )

    async def record_webhook_attempt(
        self,
        delivery_id: int,
        status: int | None,
        error: str | None,
        next_attempt_ms: int | None,
        delivered_ms: int | None,
    ) -> None:
        return await self.engine.write(
            queries.record_webhook_attempt,
            delivery_id,
            status,
            error,
            next_attempt_ms,
            delivered_ms,
        )

    async def list_webhook_deliveries(
        self, webhook_id: int, limit: int, after_id: int
    ) -> list[store.WebhookDelivery]:
        return await self.engine.read(queries.list_webhook_deliveries, webhook_id, limit, after_id)

    async def purge_webhook_deliveries(self, before_ms: int) -> int:
        return await self.engine.write(queries.purge_webhook_deliveries, before_ms)

    async def webhook_cursor(self, name: str) -> int | None:
        return await self.engine.read(queries.webhook_cursor, name)

    async def set_webhook_cursor(self, name: str, value: int) -> None:
        return await self.engine.write(queries.set_webhook_cursor, name, value)
