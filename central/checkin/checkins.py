"""Accepting a check-in: a genuine, fresh token of the room's device plus a known student.

The token is judged by the slot of the *device's* clock (central's clock plus the offset
estimated from that device's proofs), so a display whose clock is off still works.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time

from central.checkin import attendance
from central.checkin import pinguard
from central.checkin import students
from central.core import clock as clock_mod
from central.core import errors
from central.core import keyring
from central.core import ratelimit
from central.core import settings as settings_mod
from central.core import ttlcache
from central.domain import policy
from central.domain import timetable
from central.storage import database
from central.storage import store
from edge_agent.protocol import names
from edge_agent.protocol import qrtoken
from edge_agent.protocol import slots
from edge_agent.protocol import totp

BOUNDARY_GRACE_MS = 2000
BROWSER_ID = re.compile(r"[A-Za-z0-9_-]{22,64}")
SAME_BROWSER_WINDOW_MS = 3600_000
CREDENTIAL_RECHECK_S = 5.0
GENUINE_TOKENS_KEPT = 10_000
VERDICT_SEVERITY = {"verified": 0, "weak": 1, "mismatch": 2}


@dataclasses.dataclass(frozen=True)
class Request:
    token: str | None
    site: str | None
    room: str | None
    otp: str | None
    student_id: str | None
    pin: str | None
    credential: str | None
    geo: policy.Geo | None = None
    browser: str | None = None


@dataclasses.dataclass(frozen=True)
class Result:
    checkin: store.Checkin
    credential: str | None
    browser: str  # the browser's id, to (re)set as a cookie
    occurrence: timetable.Occurrence | None


def worst_verdict(*verdicts: str | None) -> str | None:
    """A displaced device flags every check-in of its window, whichever proof says so."""
    known = [v for v in verdicts if v is not None]
    # A verdict this table does not know ranks worst: it flags rather than hides.
    return (
        max(known, key=lambda v: VERDICT_SEVERITY.get(v, len(VERDICT_SEVERITY))) if known else None
    )


def device_now_ms(device: store.Device, now_ms: int) -> int:
    return now_ms + (device.clock_offset_ms or 0)


class CheckinService:
    def __init__(
        self,
        settings: settings_mod.CentralSettings,
        db: database.Database,
        keys: keyring.Keyring,
        clock: clock_mod.Clock | None = None,
    ) -> None:
        self.clock = clock or clock_mod.SystemClock()
        self.settings = settings
        self.db = db
        self.keys = keys
        self.credentials = students.Credentials(
            keys.credential_secret, settings.credential_ttl_days * 86400
        )
        self.otp_per_student = ratelimit.RateLimiter(settings.otp_attempts_per_minute)
        self.otp_per_client = ratelimit.RateLimiter(settings.otp_attempts_per_client_per_minute)
        self.checkouts_per_client = ratelimit.RateLimiter(
            settings.checkin_requests_per_client_per_minute
        )
        self.pins = pinguard.PinGuard(settings, db)
        # Hot-path caches (per process): a device's head state may be 1 s old, rooms,
        # sessions and rosters 5 s (an admin's change in this process forgets them at once).
        self.devices: ttlcache.TTLCache[tuple[str, str], store.Device | None] = ttlcache.TTLCache(
            1.0
        )
        self.rooms: ttlcache.TTLCache[tuple[str, str], store.Room | None] = ttlcache.TTLCache(5.0)
        self.sessions: ttlcache.TTLCache[tuple[str, str], list[timetable.Session]] = (
            ttlcache.TTLCache(5.0)
        )
        self.rosters: ttlcache.TTLCache[tuple[str, str], frozenset[str]] = ttlcache.TTLCache(5.0)
        self._slot_proofs: dict[tuple[str, str, int], store.ProofRow] = {}
        # (site, device, slot) of a proof not stored yet -> when to ask the store again
        self._missing_slot_proofs: dict[tuple[str, str, int], float] = {}
        self._credentials: dict[str, float] = {}
        self._genuine_tokens: set[tuple[bytes, str, str, str, int, bytes]] = set()

    async def check_in(self, request: Request, client_ip: str, now_ms: int | None = None) -> Result:
        now_ms = self.clock.now_ms() if now_ms is None else now_ms
        # The token or the code first: a PIN is never judged without a valid one.
        if request.token is not None:
            device, slot, age, method = await self._by_token(request.token, now_ms)
        else:
            device, slot, age = await self._by_otp(request, client_ip, now_ms)
            method = "otp"
        student_id, site, credential_id = await self._student(
            request, device.site, client_ip, now_ms, check_credential=False
        )
        if device.site != site:
            raise errors.ApiError(403, "wrong_site", "this student belongs to another site")
        browser = request.browser or secrets.token_urlsafe(24)
        sessions = await self.sessions.get(
            (device.site, device.room),
            lambda: attendance.room_sessions(self.db, device.site, device.room),
        )
        occurrence = attendance.running_of(
            sessions, now_ms, self.settings.checkin_opens_min * 60_000
        )
        facts = await self._facts(
            request, device, student_id, slot, age, method, client_ip, occurrence
        )
        rules = policy.Rules(self.settings.checkin_require_verified, self.settings.flag_off_campus)

        def decide(browser_students: int) -> store.NewCheckin:
            """Runs inside the store's transaction, once the same-browser count is known."""
            evidence, flags = policy.judge(
                dataclasses.replace(facts, browser_students=browser_students), rules
            )
            if flags:
                status = "flagged"
            elif occurrence is not None and now_ms > occurrence.late_after_ms:
                status = "late"
            else:
                status = "present"
            if occurrence is not None:
                evidence["timing"] = "late" if now_ms > occurrence.late_after_ms else "on_time"
            return store.NewCheckin(
                site=device.site,
                room=device.room,
                device=device.device,
                student_id=student_id,
                slot=slot,
                method=method,
                created_at=now_ms,
                token_age_ms=age,
                status=status,
                flags=tuple(flags),
                evidence=evidence,
                browser=browser,
                session_id=occurrence.session.id if occurrence else None,
                session_date=occurrence.key if occurrence else None,
            )

        context = store.CheckinContext(
            credential_id=credential_id,
            browser=browser,
            student_id=student_id,
            session_id=occurrence.session.id if occurrence else None,
            session_date=occurrence.key if occurrence else None,
            room=device.room,
            since_ms=now_ms - SAME_BROWSER_WINDOW_MS,
            now_ms=now_ms,
        )
        try:
            checkin = await self.db.record_checkin(context, decide)
        except store.CredentialInactive as exc:
            raise _credential_expired() from exc
        except store.Conflict as exc:
            message = (
                "you are already checked in for this session"
                if occurrence is not None
                else "you are already checked in for this code"
            )
            raise errors.ApiError(409, "duplicate", message) from exc
        by_pin = credential_id is None
        issued = await self._remember_browser(site, student_id, now_ms) if by_pin else None
        return Result(checkin, issued, browser, occurrence)

    async def _facts(
        self,
        request: Request,
        device: store.Device,
        student_id: str,
        slot: int,
        age: int,
        method: str,
        client_ip: str,
        occurrence: timetable.Occurrence | None,
    ) -> policy.Facts:
        """Everything the policy needs but the same-browser count, which the store reads in
        the insert's transaction."""
        proof = await self._slot_proof(device, slot)
        room = await self.rooms.get(
            (device.site, device.room), lambda: self.db.get_room(device.site, device.room)
        )
        band = None
        if request.geo is not None:
            band = policy.geo_band(
                request.geo,
                room.lat if room else None,
                room.lon if room else None,
                room.radius_m if room else 50.0,
            )
        on_roster = None
        if occurrence is not None:
            course = occurrence.session.course
            roster = await self.rosters.get(
                (device.site, course), lambda: self._roster(device.site, course)
            )
            on_roster = student_id in roster
        return policy.Facts(
            token_slot=slot,
            token_age_ms=age,
            method=method,
            device_verdict=worst_verdict(proof.verdict if proof else None, device.last_verdict),
            verdict_reasons=proof.reasons if proof else (),
            verdict_of_slot=proof is not None,
            network=policy.network_of(client_ip, self.settings.campus_networks),
            browser_students=0,  # counted by the store (record_checkin)
            browser_id=request.browser is not None,
            geo_band=band,
            on_roster=on_roster,
        )

    async def check_out(self, request: Request, client_ip: str) -> store.Checkin:
        """Venues: the same QR (or code) scanned on the way out closes the attendance. The
        token or code is judged first, then whether the room takes check-outs, then the
        student: no PIN is verified for a request that could not succeed anyway."""
        now_ms = self.clock.now_ms()
        self.checkouts_per_client.check(
            client_ip, now_ms / 1000, "too many check-outs from this address; wait"
        )
        if request.token is not None:
            device, *_ = await self._by_token(request.token, now_ms)
        else:
            device, *_ = await self._by_otp(request, client_ip, now_ms)
        occurrence = await attendance.checkout_target(
            self.db, device.site, device.room, now_ms, self.settings.checkout_after_end_min * 60_000
        )
        if occurrence is None:
            raise errors.ApiError(
                409, "no_checkout_session", "no session with check-out is running in this room"
            )
        student_id, site, _ = await self._student(request, device.site, client_ip, now_ms)
        if device.site != site:
            raise errors.ApiError(403, "wrong_site", "this student belongs to another site")
        mine = [
            c
            for c in await self.db.occurrence_checkins(occurrence.session.id, occurrence.key)
            if c.student_id == student_id
        ]
        if not mine:
            raise errors.ApiError(409, "not_checked_in", "you have not checked in to this session")
        if not await self.db.set_checkout(mine[0].id, now_ms):
            raise errors.ApiError(409, "duplicate", "you have already checked out")
        checkin = await self.db.get_checkin(mine[0].id)
        assert checkin is not None
        return checkin

    async def _by_token(self, text: str, now_ms: int) -> tuple[store.Device, int, int, str]:
        try:
            token = qrtoken.parse(text)
        except qrtoken.TokenError as exc:
            raise errors.ApiError(400, "invalid_token", str(exc), {"field": "token"}) from exc
        device = await self.devices.get(
            (token.site, token.device), lambda: self.db.get_device(token.site, token.device)
        )
        if device is None or device.ed25519 is None:
            raise errors.ApiError(404, "unknown_device", "this code belongs to no enrolled device")
        if not self._genuine(device, token) and not await self._signed_before_rotation(
            device, token, now_ms
        ):
            raise errors.ApiError(
                403, "forged_token", "this code was not shown by the room's device"
            )
        slot_s = device.slot_s
        if slot_s is None:
            raise errors.ApiError(
                503, "device_not_ready", "the room's device has not reported yet; try again"
            )
        device_ms = device_now_ms(device, now_ms)
        current = slots.slot_of(device_ms, slot_s)
        oldest = current - (self.settings.token_slots_accepted - 1)
        if token.slot > current and not (
            token.slot == current + 1
            and slots.slot_start_ms(token.slot, slot_s) - device_ms <= BOUNDARY_GRACE_MS
        ):
            raise errors.ApiError(403, "future_token", "this code is not valid yet")
        if token.slot < oldest:
            raise errors.ApiError(
                410,
                "stale_token",
                "this code has expired: scan the screen again",
                {"slot": token.slot, "current_slot": current},
            )
        age = max(0, device_ms - slots.slot_start_ms(token.slot, slot_s))
        return device, token.slot, age, "qr"

    async def _by_otp(
        self, request: Request, client_ip: str, now_ms: int
    ) -> tuple[store.Device, int, int]:
        """The room's device whose current code this is. Code attempts are limited per client
        and per claimed student (the id sent, or the credential's), whatever the PIN."""
        assert request.site and request.room and request.otp
        site, room = request.site, request.room
        if not names.is_valid(site) or not names.is_valid(room):
            raise errors.ApiError(400, "invalid_request", "invalid site or room", {"field": "room"})
        now_s = now_ms / 1000
        self.otp_per_client.check(client_ip, now_s, "too many code attempts from here; wait")
        self.otp_per_student.check(
            f"{site}:{self._claimed_student(request)}",
            now_s,
            "too many code attempts; wait a minute",
        )
        for device in await self.db.room_devices(site, room):
            if device.x25519 is None or device.slot_s is None:
                continue
            key = totp.derive_key(self.keys.agreement, device.x25519, site, device.device)
            device_ms = device_now_ms(device, now_ms)
            # The step and digest the device signed in its last proof (absent digest: sha1).
            step = device.otp_step_s or 30
            digest = device.otp_digest or "sha1"
            if (
                totp.matches(key, request.otp, device_ms / 1000, step, window=1, digest=digest)
                is not None
            ):
                slot = slots.slot_of(device_ms, device.slot_s)
                return device, slot, device_ms - slots.slot_start_ms(slot, device.slot_s)
        raise errors.ApiError(403, "wrong_code", "this code is not the room's current code")

    def _claimed_student(self, request: Request) -> str:
        """Who the request says it is, before anything is verified (a key for limits)."""
        if request.credential is not None and not (request.student_id and request.pin):
            credential = self.credentials.read(request.credential)
            return credential.student_id if credential is not None else "?"
        return (request.student_id or "?")[:64]

    async def _student(
        self,
        request: Request,
        site: str,
        client_ip: str,
        now_ms: int,
        check_credential: bool = True,
    ) -> tuple[str, str, str | None]:
        """(student_id, site, the remembered-browser credential's id or None after a PIN).
        With `check_credential` False the caller has the store check it is still active.
        Called only once the token or code is known good; a wrong PIN and an unknown student
        answer alike (pinguard.PinGuard limits both the same way)."""
        if request.credential is not None and not (request.student_id and request.pin):
            credential = self.credentials.read(request.credential)
            if credential is None or (
                check_credential and not await self._credential_active(credential.id, now_ms)
            ):
                raise _credential_expired()
            return credential.student_id, credential.site, credential.id
        assert request.student_id and request.pin
        if not names.is_valid(request.student_id) or not await self.pins.verify(
            site, request.student_id, request.pin, client_ip, now_ms
        ):
            raise _unknown_student()
        return request.student_id, site, None

    async def _roster(self, site: str, course: str) -> frozenset[str]:
        return frozenset(await self.db.roster(site, course))

    async def _slot_proof(self, device: store.Device, slot: int) -> store.ProofRow | None:
        """A stored proof never changes: remembered once found. Until it arrives (the first
        moments of a slot), the store is asked again at most once a second per device and
        slot, as fresh as the device's cached head state, not once per scanning student."""
        key = (device.site, device.device, slot)
        found = self._slot_proofs.get(key)
        if found is not None:
            return found
        now = time.monotonic()
        if self._missing_slot_proofs.get(key, 0.0) > now:
            return None
        found = await self.db.proof_for_slot(device.site, device.device, slot)
        if found is None:
            if len(self._missing_slot_proofs) > 20_000:
                self._missing_slot_proofs.clear()
            self._missing_slot_proofs[key] = now + self.devices.ttl_s
            return None
        self._missing_slot_proofs.pop(key, None)
        if len(self._slot_proofs) > 20_000:
            self._slot_proofs.clear()
        self._slot_proofs[key] = found
        return found

    def _genuine(self, device: store.Device, token: qrtoken.Token) -> bool:
        """The token's signature checks with the device's key. A hall scans the same token
        within one slot: each (key, room, token) is verified once, not once per student."""
        assert device.ed25519 is not None
        key = (device.ed25519, device.room, token.site, token.device, token.slot, token.signature)
        if key in self._genuine_tokens:
            return True
        if not qrtoken.verify(
            device.ed25519, device.site, device.device, device.room, token.slot, token.signature
        ):
            return False
        if len(self._genuine_tokens) >= GENUINE_TOKENS_KEPT:
            self._genuine_tokens.clear()
        self._genuine_tokens.add(key)
        return True

    async def _signed_before_rotation(
        self, device: store.Device, token: qrtoken.Token, now_ms: int
    ) -> bool:
        """Just after a key rotation the screen may still show a token signed with the old
        key: it counts while it could still be current (a slot's acceptance window plus one
        slot). Not after a re-enrollment, whose old key may be compromised."""
        history = await self.db.device_keys(device.site, device.device)
        if len(history) < 2 or history[-1].kind != "rotate":
            return False
        window_ms = (self.settings.token_slots_accepted + 1) * (device.slot_s or 0) * 1000
        if now_ms - history[-1].added_at > window_ms + BOUNDARY_GRACE_MS:
            return False
        previous = history[-2]
        return previous.room == device.room and qrtoken.verify(
            previous.ed25519, device.site, device.device, device.room, token.slot, token.signature
        )

    def close(self) -> None:
        self.pins.close()

    def forget_credentials(self) -> None:
        """After an erase or a revocation: every credential is checked with the store again."""
        self._credentials.clear()

    async def _credential_active(self, credential_id: str, now_ms: int) -> bool:
        """Active credentials are re-checked at most every CREDENTIAL_RECHECK_S seconds: a
        revocation takes effect within that time."""
        checked = self._credentials.get(credential_id)
        if checked is not None and time.monotonic() - checked < CREDENTIAL_RECHECK_S:
            return True
        active = await self.db.credential_active(credential_id, now_ms)
        if active:
            if len(self._credentials) > 200_000:
                self._credentials.clear()
            self._credentials[credential_id] = time.monotonic()
        else:
            self._credentials.pop(credential_id, None)
        return active

    async def _remember_browser(self, site: str, student_id: str, now_ms: int) -> str:
        """A credential for the fast path, issued only after a successful PIN check-in."""
        credential, token = self.credentials.issue(site, student_id)
        expires = now_ms + int(self.credentials.ttl_s * 1000)
        await self.db.add_credential(credential.id, site, student_id, now_ms, expires)
        return token


def _unknown_student() -> errors.ApiError:
    """The one answer for an unknown student id and a wrong PIN."""
    return errors.ApiError(401, "bad_credentials", "unknown student id or wrong PIN")


def _credential_expired() -> errors.ApiError:
    return errors.ApiError(
        401, "bad_credentials", "this browser's sign-in expired; enter your id and PIN"
    )
