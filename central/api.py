"""HTTP routes: health, the check-in pages and API, the admin API and the live event stream."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import html
import importlib.resources
import json
import logging
import secrets
import string
import time
import typing

from aiohttp import web

from central import audit
from central import auth
from central import bridge as bridge_mod
from central import checkins
from central import clientip
from central import clock as clock_mod
from central import csrf
from central import environment
from central import errors
from central import events
from central import i18n
from central import keyring
from central import metrics
from central import outage
from central import params
from central import profiles
from central import ratelimit
from central import store
from central import streams
from edge_agent.protocol import b64
from edge_agent.protocol import command
from edge_agent.protocol import names
from edge_agent.protocol import qrtoken

log = logging.getLogger(__name__)
ALERT_KINDS = frozenset({"displaced", "offline", "clock", "gap", "fork"})
COOKIE = "roomproof_student"
BROWSER_COOKIE = "roomproof_browser"  # not bound to a student: reveals one phone used for many
BROWSER_COOKIE_AGE_S = 400 * 86400
KEEPALIVE_S = 15.0


def _page(name: str) -> string.Template:
    return string.Template(importlib.resources.files("central.pages").joinpath(name).read_text())


def checkin_json(checkin: store.Checkin) -> dict[str, typing.Any]:
    return {
        "id": checkin.id,
        "site": checkin.site,
        "room": checkin.room,
        "device": checkin.device,
        "student_id": checkin.student_id,
        "slot": checkin.slot,
        "method": checkin.method,
        "created_at": params.iso(checkin.created_at),
        "token_age_ms": checkin.token_age_ms,
        "status": checkin.status,
        "flags": list(checkin.flags),
        "session_id": checkin.session_id,
        "session_date": checkin.session_date,
        "checked_out_at": params.iso(checkin.checked_out_at),
        "duration_s": (
            (checkin.checked_out_at - checkin.created_at) // 1000
            if checkin.checked_out_at is not None
            else None
        ),
        "evidence": checkin.evidence,
    }


class Api:
    def __init__(
        self,
        db: store.Store,
        keys: keyring.Keyring,
        service: checkins.CheckinService,
        hub: events.Hub,
        bridge: bridge_mod.Bridge | None,
        secure_cookie: bool,
        clock: clock_mod.Clock,
        meters: metrics.Metrics,
    ) -> None:
        self.clock = clock
        self.metrics = meters
        self.proxies = clientip.networks(service.settings.trusted_proxies)
        self.checkin_limiter = ratelimit.RateLimiter(
            service.settings.checkin_requests_per_client_per_minute
        )
        self.db = db
        self.keys = keys
        self.service = service
        self.hub = hub
        self.streams = streams.Streams(hub, service.settings.event_streams_per_token)
        self.bridge = bridge
        self.secure_cookie = secure_cookie
        self.checkin_page = _page("checkin.html")
        self.otp_page = _page("otp.html")
        self.style = importlib.resources.files("central.pages").joinpath("style.css").read_bytes()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/c/{site}/{device}/{token}", self.checkin_html)
        app.router.add_get("/otp", self.otp_html)
        app.router.add_get("/static/style.css", self.stylesheet)
        app.router.add_post("/api/v1/checkins", self.post_checkin)
        app.router.add_get("/api/v1/checkins", self.list_checkins)
        app.router.add_get("/api/v1/devices", self.devices)
        app.router.add_get("/api/v1/proofs", self.proofs)
        app.router.add_get("/api/v1/rejections", self.rejections)
        app.router.add_get("/api/v1/events", self.events)
        app.router.add_get("/api/v1/keys", self.central_keys)
        app.router.add_get("/api/v1/rooms", self.rooms)
        app.router.add_post("/api/v1/rooms/{site}/{room}/profile", self.profile_action)
        app.router.add_patch("/api/v1/rooms/{site}/{room}", self.update_room)
        app.router.add_get("/api/v1/alerts", self.alerts)
        app.router.add_post("/api/v1/alerts/{id}/clear", self.clear_alert)
        app.router.add_get("/api/v1/chain-events", self.chain_events)
        app.router.add_get("/api/v1/tokens", self.tokens)
        app.router.add_post("/api/v1/devices/{site}/{device}/commands", self.send_command)
        app.router.add_get("/api/v1/devices/{site}/{device}/commands", self.list_commands)
        app.router.add_get("/api/v1/devices/{site}/{device}/keys", self.device_keys)
        app.router.add_get("/api/v1/audit", self.audit_log)
        app.router.add_delete("/api/v1/tokens/{id}", self.revoke_token)
        app.router.add_route("*", "/api/{tail:.*}", self.not_found)

    async def not_found(self, request: web.Request) -> web.Response:
        """Unknown /api/ paths: 404; a known path with another method: 405 with Allow (the
        catch-all would otherwise hide aiohttp's own 405)."""
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource is not request.match_info.route.resource:
                allowed |= (await resource.resolve(request))[1]
        if allowed:
            raise errors.ApiError(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {request.path}",
                {"allowed": sorted(allowed)},
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        raise errors.ApiError(
            404, "not_found", f"no such endpoint: {request.method} {request.path}"
        )

    async def healthz(self, request: web.Request) -> web.Response:
        """The store and the broker apart: 503 while the store cannot write (the last write's
        outcome says so); a broker outage is reported, not fatal (check-ins still work)."""
        mqtt = "connected" if self.bridge is not None and self.bridge.connected else "disconnected"
        if outage.STORE.down:
            return web.json_response(
                {"status": "unavailable", "store": "unavailable", "mqtt": mqtt},
                status=503,
                headers={"Retry-After": str(outage.RETRY_AFTER_S)},
            )
        return web.json_response({"status": "ok", "store": "ok", "mqtt": mqtt})

    async def prometheus(self, request: web.Request) -> web.Response:
        """Prometheus exposition. It is process-wide (every site's), so an operator's token
        reads all of it and a site's token only the series labelled with its own site."""
        await auth.require(request, self.db)
        await self.metrics.refresh(self.db)
        body = self.metrics.exposition()
        own = auth.site_of(request)
        if own is not None:
            mine = f'site="{own}"'.encode()
            body = b"".join(
                line
                for line in body.splitlines(keepends=True)
                if line.startswith(b"#") or mine in line.split(b"}", 1)[0]
            )
        return web.Response(
            body=body,
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def central_keys(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ed25519": b64.encode(self.keys.signing.public),
                "x25519": b64.encode(self.keys.agreement.public),
            }
        )

    # -- students --------------------------------------------------------------------------
    async def checkin_html(self, request: web.Request) -> web.Response:
        site, device_name = request.match_info["site"], request.match_info["device"]
        lang = i18n.choose(request.headers.get("Accept-Language"))
        strings = i18n.catalogs()[lang]
        room_label = strings["this_room"]
        try:
            qrtoken.parse(request.path)
        except qrtoken.TokenError:
            room_label = ""
        if room_label and names.is_valid(site) and names.is_valid(device_name):
            device = await self.db.get_device(site, device_name)
            if device is not None:
                room = await self.db.get_room(site, device.room)
                room_label = room.name if room else device.room
        data = {
            "token": request.path,
            "valid": bool(room_label),
            "remembered": bool(request.cookies.get(COOKIE)),
            "strings": strings,
        }
        page = self.checkin_page.substitute(
            room=html.escape(room_label or strings["unknown_room"]),
            lang=lang,
            data=i18n.script_json(data),
            **i18n.html_values(lang),
        )
        response = web.Response(text=page, content_type="text/html", headers=_page_headers(lang))
        self._give_browser_id(request, response)
        return response

    def _give_browser_id(self, request: web.Request, response: web.Response) -> None:
        """The check-in pages give a browser without one its id before the student submits:
        a check-in that still arrives without it is flagged `no_browser_id` (a relay or a
        client that keeps no cookies), not a genuine student's first visit."""
        if checkins.BROWSER_ID.fullmatch(request.cookies.get(BROWSER_COOKIE, "")):
            return
        response.set_cookie(
            BROWSER_COOKIE,
            secrets.token_urlsafe(24),
            max_age=BROWSER_COOKIE_AGE_S,
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookie,
            path="/",
        )

    async def stylesheet(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.style, content_type="text/css", headers={"Cache-Control": "max-age=3600"}
        )

    async def otp_html(self, request: web.Request) -> web.Response:
        lang = i18n.choose(request.headers.get("Accept-Language"))
        data = {"remembered": bool(request.cookies.get(COOKIE)), "strings": i18n.catalogs()[lang]}
        page = self.otp_page.substitute(
            lang=lang, data=i18n.script_json(data), **i18n.html_values(lang)
        )
        response = web.Response(text=page, content_type="text/html", headers=_page_headers(lang))
        self._give_browser_id(request, response)
        return response

    async def post_checkin(self, request: web.Request) -> web.Response:
        settings = self.service.settings
        csrf.check(request, settings.public_url)
        client = clientip.client_ip(request, self.proxies)
        self.checkin_limiter.check(
            client, time.monotonic(), "too many check-ins from this address; wait"
        )
        data = await params.json_object(request)
        parsed = checkins.Request.parse(
            data, request.cookies.get(COOKIE), request.cookies.get(BROWSER_COOKIE)
        )
        try:
            result = await self.service.check_in(parsed, client)
        except errors.ApiError as exc:
            self.metrics.checkins.labels(outcome=exc.code).inc()
            raise
        self.metrics.checkins.labels(outcome=result.checkin.status).inc()
        body: dict[str, typing.Any] = {"checkin": checkin_json(result.checkin)}
        if result.occurrence is not None:
            body["session"] = {
                "id": result.occurrence.session.id,
                "course": result.occurrence.session.course,
                "date": result.occurrence.key,
                "starts_at": params.iso(result.occurrence.start_ms),
                "ends_at": params.iso(result.occurrence.end_ms),
            }
        if result.credential is not None:
            body["credential"] = result.credential
        response = web.json_response(body, status=201)
        if result.credential is not None:
            response.set_cookie(
                COOKIE,
                result.credential,
                max_age=int(self.service.credentials.ttl_s),
                httponly=True,
                samesite="Strict",
                secure=self.secure_cookie,
                path="/",
            )
        response.set_cookie(
            BROWSER_COOKIE,
            result.browser,
            max_age=BROWSER_COOKIE_AGE_S,
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookie,
            path="/",
        )
        self.hub.publish("checkin", body["checkin"])
        return response

    # -- admins ----------------------------------------------------------------------------
    async def devices(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        site = auth.list_site(request, params.name_param(request, "site"))
        rows = [
            {
                "site": d.site,
                "room": d.room,
                "device": d.device,
                "online": d.online,
                "enrolled": d.ed25519 is not None,
                "last_seq": d.last_seq,
                "last_proof_at": params.iso(d.last_proof_at),
                "public_key": b64.encode(d.ed25519) if d.ed25519 else None,
                "x25519_public_key": b64.encode(d.x25519) if d.x25519 else None,
                "clock_offset_ms": d.clock_offset_ms,
                "slot_s": d.slot_s,
                "otp_step_s": d.otp_step_s,
                "otp_digest": (d.otp_digest or "sha1") if d.slot_s is not None else None,
                "verdict": d.last_verdict,
                "telemetry": self._telemetry(d.site, d.device),
            }
            for d in await self.db.list_devices(site)
        ]
        return web.json_response({"devices": rows})

    def _telemetry(self, site: str, device: str) -> dict[str, typing.Any] | None:
        """The device's last telemetry as this process received it (None before any)."""
        if self.bridge is None:
            return None
        last = self.bridge.telemetry.get((site, device))
        if last is None:
            return None
        return {**last, "received_at": params.iso(last["received_at"])}

    async def proofs(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        device = params.name_param(request, "device", required=True)
        assert device is not None
        rows = await self.db.list_proofs(
            auth.list_site(request, params.name_param(request, "site")),
            device,
            params.int_param(request, "limit", 100, 1, 1000),
        )
        return web.json_response(
            {
                "proofs": [
                    {
                        "site": r.site,
                        "device": r.device,
                        "seq": r.seq,
                        "slot": r.slot,
                        "iat": r.iat,
                        "received_at": params.iso(r.received_at),
                        "hash": r.hash,
                        "gap_before": r.gap_before,
                        "verdict": r.verdict,
                        "reasons": list(r.reasons),
                        "jws": r.jws,
                    }
                    for r in rows
                ]
            }
        )

    async def list_checkins(self, request: web.Request) -> web.Response:
        """Check-ins oldest first; a teacher's only those attributed to its courses' sessions
        (filtered in the query, so a short page still means the end)."""
        await auth.require(request, self.db)
        limit = params.int_param(request, "limit", 1000, 1, 10000)
        rows = await self.db.list_checkins(
            auth.list_site(request, params.name_param(request, "site")),
            params.name_param(request, "room"),
            params.time_param(request, "since"),
            limit,
            params.int_param(request, "after", 0, 0, 2**62),
            params.name_param(request, "student"),
            request.get(auth.SCOPE),
        )
        return web.json_response(
            {
                "checkins": [checkin_json(c) for c in rows],
                "next_after": rows[-1].id if len(rows) == limit else None,
            }
        )

    async def rejections(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        counts, recent = await self.db.rejections()
        own = auth.site_of(request)
        if own is not None:  # a site's token: its own devices' rejections, counted from those
            recent = [row for row in recent if _topic_site(row["topic"]) == own]
            counts = {}
            for row in recent:
                counts[row["reason"]] = counts.get(row["reason"], 0) + 1
        for row in recent:
            row["at"] = params.iso(row["at"])
        return web.json_response({"counts": counts, "recent": recent})

    async def rooms(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        rows = []
        for room in await self.db.list_rooms(
            auth.list_site(request, params.name_param(request, "site"))
        ):
            profile = await self.db.get_profile(room.site, room.room)
            rows.append(
                {
                    "site": room.site,
                    "room": room.room,
                    "name": room.name,
                    "lat": room.lat,
                    "lon": room.lon,
                    "radius_m": room.radius_m,
                    "profile": profile_json(profile) if profile else None,
                }
            )
        return web.json_response({"rooms": rows})

    async def update_room(self, request: web.Request) -> web.Response:
        """The room's geofence: `{"lat", "lon", "radius_m"}` (lat/lon both, or both null)."""
        await auth.require(request, self.db, roles=("admin",))
        site, name = request.match_info["site"], request.match_info["room"]
        room = (
            await self.db.get_room(site, name)
            if names.is_valid(site) and names.is_valid(name) and auth.sees_site(request, site)
            else None
        )
        if room is None:
            raise errors.ApiError(404, "not_found", "no such room")
        body = await params.json_object(request)
        unknown = sorted(set(body) - {"lat", "lon", "radius_m"})
        if unknown:
            raise errors.ApiError(400, "invalid_request", "unknown fields", {"fields": unknown})
        lat = body.get("lat", room.lat) if "lat" in body or "lon" in body else room.lat
        lon = body.get("lon", room.lon) if "lat" in body or "lon" in body else room.lon
        radius = body.get("radius_m", room.radius_m)
        number = (int, float)
        if (lat is None) != (lon is None) or (
            lat is not None
            and not (
                isinstance(lat, number)
                and isinstance(lon, number)
                and not isinstance(lat, bool)
                and not isinstance(lon, bool)
                and -90 <= lat <= 90
                and -180 <= lon <= 180
            )
        ):
            raise errors.ApiError(
                400, "invalid_request", "lat and lon: both numbers in range, or both null"
            )
        if not isinstance(radius, number) or isinstance(radius, bool) or not 0 < radius <= 100_000:
            raise errors.ApiError(
                400, "invalid_request", "radius_m must be 0..100000", {"field": "radius_m"}
            )
        await self.db.update_room(site, name, lat, lon, float(radius))
        if self.bridge is not None:
            self.bridge.forget_room(site, name)
        self.service.rooms.forget((site, name))
        await audit.api(request, self.db, "room_geofence", f"{site}/{name}", json.dumps(body), site)
        updated = await self.db.get_room(site, name)
        assert updated is not None
        return web.json_response({"room": dataclasses.asdict(updated)})

    async def profile_action(self, request: web.Request) -> web.Response:
        """`confirm` a learned profile (it then judges proofs) or `relearn` from scratch."""
        await auth.require(request, self.db, roles=("admin",))
        site, room = request.match_info["site"], request.match_info["room"]
        if (
            not names.is_valid(site)
            or not names.is_valid(room)
            or not auth.sees_site(request, site)
        ):
            raise errors.ApiError(404, "not_found", "no such room")
        body = await params.json_object(request)
        if body.get("action") not in ("confirm", "relearn"):
            raise errors.ApiError(
                400, "invalid_request", "action must be confirm or relearn", {"field": "action"}
            )
        unknown = sorted(set(body) - {"action", "learn_proofs", "wifi", "ble"})
        if unknown:
            raise errors.ApiError(400, "invalid_request", "unknown fields", {"fields": unknown})
        learn = body.get("learn_proofs", 10)
        if not isinstance(learn, int) or not 1 <= learn <= 10_000:
            raise errors.ApiError(
                400, "invalid_request", "learn_proofs must be 1..10000", {"field": "learn_proofs"}
            )
        for key in ("wifi", "ble"):
            if body.get(key) is not None and (
                body["action"] != "confirm" or not isinstance(body[key], list)
            ):
                raise errors.ApiError(
                    400, "invalid_request", f"{key} is a list, with confirm", {"field": key}
                )
        try:
            profile = await profiles.apply(
                self.db, site, room, body["action"], learn, body.get("wifi"), body.get("ble")
            )
        except profiles.ProfileError as exc:
            raise errors.ApiError(exc.status, exc.code, str(exc)) from exc
        await audit.api(request, self.db, f"profile_{body['action']}", f"{site}/{room}", site=site)
        return web.json_response({"profile": profile_json(profile)})

    async def alerts(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        open_text = request.query.get("open", "false").lower()
        if open_text not in ("1", "true", "yes", "0", "false", "no"):
            raise errors.ApiError(
                400, "invalid_request", "open must be true or false", {"field": "open"}
            )
        open_only = open_text in ("1", "true", "yes")
        limit = params.int_param(request, "limit", 100, 1, 1000)
        kind = request.query.get("kind")
        if kind is not None and kind not in ALERT_KINDS:
            raise errors.ApiError(
                400,
                "invalid_request",
                f"kind must be one of {sorted(ALERT_KINDS)}",
                {"field": "kind"},
            )
        rows = await self.db.list_alerts(
            auth.list_site(request, params.name_param(request, "site")),
            open_only,
            limit,
            params.int_param(request, "after", 0, 0, 2**62),
            kind,
        )
        next_after = rows[-1].id if len(rows) == limit else None
        return web.json_response(
            {"alerts": [bridge_mod.alert_json(a) for a in rows], "next_after": next_after}
        )

    async def clear_alert(self, request: web.Request) -> web.Response:
        """An admin closes an alert that does not clear itself (a fork, a gap never filled)."""
        await auth.require(request, self.db, roles=("admin",))
        alert_id = params.path_int(request, "id")
        existing = await self.db.list_alerts(auth.site_of(request), False, 1, alert_id - 1)
        if not existing or existing[0].id != alert_id:
            raise errors.ApiError(404, "not_found", f"no alert {alert_id}")
        cleared = await self.db.clear_alert(alert_id, self.clock.now_ms())
        if cleared is None:
            raise errors.ApiError(409, "already_cleared", f"alert {alert_id} is already cleared")
        target = f"{cleared.site}/{cleared.device}"
        await audit.api(request, self.db, "alert_clear", target, cleared.kind, cleared.site)
        body = bridge_mod.alert_json(cleared, "cleared")
        self.hub.publish("alert", body)
        return web.json_response({"alert": body})

    async def _device_of(self, request: web.Request) -> store.Device:
        site, name = request.match_info["site"], request.match_info["device"]
        found = None
        if names.is_valid(site) and names.is_valid(name) and auth.sees_site(request, site):
            found = await self.db.get_device(site, name)
        if found is None or found.ed25519 is None:
            raise errors.ApiError(404, "not_found", "no such enrolled device")
        return found

    async def send_command(self, request: web.Request) -> web.Response:
        """`{"kind": "show_message", "args": {"text", "seconds"}, "ttl_s": 300}` or
        `{"kind": "status_report"}`: signed by central, delivered on the device's cmd topic."""
        await auth.require(request, self.db, roles=("admin",))
        device = await self._device_of(request)
        body = await params.json_object(request)
        unknown = sorted(set(body) - {"kind", "args", "ttl_s"})
        if unknown:
            raise errors.ApiError(400, "invalid_request", "unknown fields", {"fields": unknown})
        ttl_s = body.get("ttl_s", 300)
        if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or not 1 <= ttl_s <= 86400:
            raise errors.ApiError(400, "invalid_request", "ttl_s: 1..86400", {"field": "ttl_s"})
        if self.bridge is None:
            raise errors.ApiError(503, "broker_unavailable", "this central has no broker link")
        try:
            sent = await self.bridge.send_command(
                device.site, device.device, str(body.get("kind")), body.get("args") or {}, ttl_s
            )
        except command.CommandError as exc:
            raise errors.ApiError(400, "invalid_request", str(exc), {"field": "kind"}) from exc
        except ConnectionError as exc:
            raise errors.ApiError(503, "broker_unavailable", str(exc)) from exc
        target = f"{device.site}/{device.device}"
        await audit.api(
            request, self.db, f"command_{sent['kind']}", target, sent["nonce"], device.site
        )
        return web.json_response({"command": _command_json(sent)}, status=201)

    async def list_commands(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        device = await self._device_of(request)
        sent = self.bridge.commands.get((device.site, device.device), ()) if self.bridge else ()
        return web.json_response({"commands": [_command_json(c) for c in sent]})

    async def device_keys(self, request: web.Request) -> web.Response:
        """The device's key history (each key, the seq it signs from, and the signed message
        that introduced it), for auditors re-verifying old proofs."""
        await auth.require(request, self.db, roles=("admin", "auditor"))
        device = await self._device_of(request)
        history = await self.db.device_keys(device.site, device.device)
        return web.json_response(
            {
                "keys": [
                    {
                        "kind": k.kind,
                        "room": k.room,
                        "from_seq": k.from_seq,
                        "public_key": b64.encode(k.ed25519),
                        "x25519_public_key": b64.encode(k.x25519),
                        "added_at": params.iso(k.added_at),
                        "current": k.ed25519 == device.ed25519,
                        "evidence": k.evidence,
                        "note": k.note,
                    }
                    for k in history
                ]
            }
        )

    async def audit_log(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, roles=("admin", "auditor"))
        limit = params.int_param(request, "limit", 100, 1, 1000)
        rows = await self.db.list_audit(
            limit, params.int_param(request, "after", 0, 0, 2**62), auth.site_of(request)
        )
        return web.json_response(
            {
                "audit": [
                    {
                        "id": e.id,
                        "at": params.iso(e.at),
                        "actor": e.actor,
                        "action": e.action,
                        "target": e.target,
                        "detail": e.detail,
                        "site": e.site,
                    }
                    for e in rows
                ],
                "next_after": rows[-1].id if len(rows) == limit else None,
            }
        )

    async def tokens(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, roles=("admin",))
        rows = await self.db.list_admin_tokens(auth.site_of(request))
        return web.json_response(
            {
                "tokens": [
                    {
                        "id": t.id,
                        "role": t.role,
                        "site": t.site,
                        "name": t.name,
                        "created_at": params.iso(t.created_at),
                        "courses": list(t.courses),
                    }
                    for t in rows
                ]
            }
        )

    async def revoke_token(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, roles=("admin",))
        token_id = request.match_info["id"]
        if not await self.db.revoke_admin_token(token_id, auth.site_of(request)):
            raise errors.ApiError(404, "not_found", "no token with this id")
        await audit.api(request, self.db, "token_revoke", token_id)
        return web.json_response({"revoked": token_id})

    async def chain_events(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        limit = params.int_param(request, "limit", 100, 1, 1000)
        rows = await self.db.list_chain_events(
            auth.list_site(request, params.name_param(request, "site")),
            params.name_param(request, "device"),
            limit,
            params.int_param(request, "after", 0, 0, 2**62),
        )
        return web.json_response(
            {
                "events": [
                    {
                        "id": e.id,
                        "site": e.site,
                        "device": e.device,
                        "kind": e.kind,
                        "first": e.first,
                        "last": e.last,
                        "detail": e.detail,
                        "detected_at": params.iso(e.detected_at),
                        "resolved_at": params.iso(e.resolved_at),
                    }
                    for e in rows
                ],
                "next_after": rows[-1].id if len(rows) == limit else None,
            }
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: `proof`, `checkin` and `device` as they happen, of the token's
        site only (an operator's: every site). A teacher gets
        only `checkin`, `checkout` and `attendance` of its courses' sessions: proofs, devices,
        alerts and commands are per room, and rooms are shared between courses."""
        await auth.require(request, self.db)
        scope = request.get(auth.SCOPE)
        own_site = auth.site_of(request)
        sessions: dict[int, bool] = {}  # session id -> one of the teacher's courses

        async def visible(kind: str, data: dict[str, typing.Any]) -> bool:
            if own_site is not None and data.get("site") != own_site:
                return False  # every event names its site; a site's token sees only its own
            if scope is None:
                return True
            session_id = data.get("session_id")
            if kind not in events.SESSION_KINDS or not isinstance(session_id, int):
                return False
            if session_id not in sessions:
                session = await self.db.get_session(session_id)
                sessions[session_id] = session is not None and (
                    (session.site, session.course) in scope
                )
            return sessions[session_id]

        # At most N per token (429); ends within streams.RECHECK_S of a revocation or expiry.
        recheck = functools.partial(auth.require, request, self.db)
        stream = self.streams.open(request, request[auth.ACTOR], recheck)
        queue = stream.queue
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                "X-Request-Id": request[errors.REQUEST_ID],
            }
        )
        loop = asyncio.get_running_loop()
        try:
            await response.prepare(request)
            await response.write(b": connected\n\n")
            # Keep-alive after KEEPALIVE_S without a write, even while a teacher's filter
            # drops every event (proofs arrive all the time): proxies close silent streams.
            written = loop.time()
            while True:
                try:
                    item = await asyncio.wait_for(
                        queue.get(), max(0.0, written + KEEPALIVE_S - loop.time())
                    )
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    written = loop.time()
                    continue
                if item is None:
                    break
                kind, data = item
                if not await visible(kind, data):
                    continue
                await response.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
                written = loop.time()
        except ConnectionResetError:
            log.info("event-stream client went away [%s]", request[errors.REQUEST_ID])
        finally:
            await stream.close()
        return response


def _topic_site(topic: str) -> str | None:
    """The site of a `roomproof/v1/{site}/...` topic; None for any other topic."""
    parts = topic.split("/")
    return parts[2] if len(parts) > 3 and parts[:2] == ["roomproof", "v1"] else None


def _command_json(sent: dict[str, typing.Any]) -> dict[str, typing.Any]:
    return {
        **sent,
        "sent_at": params.iso(sent["sent_at"]),
        "expires_at": params.iso(sent["expires_at"]),
    }


def profile_json(profile: environment.Profile) -> dict[str, typing.Any]:
    return {
        "state": profile.state,
        "wifi": sorted(profile.wifi),
        "ble": sorted(profile.ble),
        "learned": profile.learned,
        "learn_proofs": profile.learn_target,
    }


def _page_headers(lang: str) -> dict[str, str]:
    return {
        "Cache-Control": "no-store",
        "Content-Language": lang,
        "Vary": "Accept-Language, Cookie",
        "Content-Security-Policy": "default-src 'none'; style-src 'self';"
        " script-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none';"
        " frame-ancestors 'none'",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
