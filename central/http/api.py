"""HTTP routes: health, the check-in pages and API, the admin API and the live event stream."""

from __future__ import annotations

import asyncio
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

from central.admin import profiles
from central.checkin import checkins
from central.core import clock as clock_mod
from central.core import errors
from central.core import events
from central.core import i18n
from central.core import keyring
from central.core import metrics
from central.core import outage
from central.core import params
from central.core import ratelimit
from central.domain import netaddr
from central.http import audit
from central.http import auth
from central.http import clientip
from central.http import csrf
from central.http import streams
from central.http.apimodels import bodies
from central.http.apimodels import parse
from central.http.apimodels import queries
from central.http.apimodels import responses
from central.http.apimodels import spec
from central.ingest import bridge as bridge_mod
from central.storage import database
from central.storage import store
from edge_agent.protocol import b64
from edge_agent.protocol import command
from edge_agent.protocol import names
from edge_agent.protocol import qrtoken

log = logging.getLogger(__name__)
COOKIE = "roomproof_student"
BROWSER_COOKIE = "roomproof_browser"  # not bound to a student: reveals one phone used for many
BROWSER_COOKIE_AGE_S = 400 * 86400
KEEPALIVE_S = 15.0


def _page(name: str) -> string.Template:
    return string.Template(
        importlib.resources.files("central.http.pages").joinpath(name).read_text()
    )


class Api:
    def __init__(
        self,
        db: database.Database,
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
        self.proxies = netaddr.networks(service.settings.trusted_proxies)
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
        self.style = (
            importlib.resources.files("central.http.pages").joinpath("style.css").read_bytes()
        )

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

    @spec.operation(
        "GET",
        "/api/v1/keys",
        "Central's public keys (Ed25519 for signatures, X25519 for agreement)",
        responses.Keys,
        roles=None,
        tag="meta",
    )
    async def central_keys(self, request: web.Request) -> web.Response:
        return parse.respond(
            responses.Keys(
                ed25519=b64.encode(self.keys.signing.public),
                x25519=b64.encode(self.keys.agreement.public),
            )
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

    @spec.operation(
        "POST",
        "/api/v1/checkins",
        "A student checks in: the QR token or the room's one-time code, then the"
        " student id and PIN (or the remembered credential)",
        responses.CheckinResult,
        roles=None,
        ok=201,
        body=bodies.Checkin,
        errors=(403, 404, 409, 415, 429),
        tag="students",
    )
    async def post_checkin(self, request: web.Request) -> web.Response:
        settings = self.service.settings
        csrf.check(request, settings.public_url)
        client = clientip.client_ip(request, self.proxies)
        self.checkin_limiter.check(
            client, time.monotonic(), "too many check-ins from this address; wait"
        )
        body = await parse.body(request, bodies.Checkin)
        parsed = body.request(request.cookies.get(COOKIE), request.cookies.get(BROWSER_COOKIE))
        try:
            result = await self.service.check_in(parsed, client)
        except errors.ApiError as exc:
            self.metrics.checkins.labels(outcome=exc.code).inc()
            raise
        self.metrics.checkins.labels(outcome=result.checkin.status).inc()
        parts: dict[str, typing.Any] = {"checkin": responses.Checkin.of(result.checkin)}
        if result.occurrence is not None:
            parts["session"] = responses.CheckinSession(
                id=result.occurrence.session.id,
                course=result.occurrence.session.course,
                date=result.occurrence.key,
                starts_at=result.occurrence.start_ms,
                ends_at=result.occurrence.end_ms,
            )
        if result.credential is not None:
            parts["credential"] = result.credential
        answer = responses.CheckinResult(**parts)  # the parts not given are left out
        response = parse.respond(answer, status=201)
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
        self.hub.publish("checkin", parse.plain(answer.checkin))
        return response

    # -- admins ----------------------------------------------------------------------------
    @spec.operation(
        "GET",
        "/api/v1/devices",
        "Devices with status, keys and last telemetry",
        responses.Devices,
        query=queries.Site,
    )
    async def devices(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        site = auth.list_site(request, parse.query(request, queries.Site).site)
        rows = [
            responses.Device.of(d, self._telemetry(d.site, d.device))
            for d in await self.db.list_devices(site)
        ]
        return parse.respond(responses.Devices(devices=rows))

    def _telemetry(self, site: str, device: str) -> dict[str, typing.Any] | None:
        """The device's last telemetry as this process received it (None before any)."""
        if self.bridge is None:
            return None
        last = self.bridge.telemetry.get((site, device))
        if last is None:
            return None
        return {**last, "received_at": params.iso(last["received_at"])}

    @spec.operation(
        "GET",
        "/api/v1/proofs",
        "A device's latest stored proofs",
        responses.Proofs,
        query=queries.Proofs,
    )
    async def proofs(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        query = parse.query(request, queries.Proofs)
        rows = await self.db.list_proofs(
            auth.list_site(request, query.site), query.device, query.limit
        )
        return parse.respond(
            responses.Proofs(proofs=[responses.Proof.from_record(r) for r in rows])
        )

    @spec.operation(
        "GET",
        "/api/v1/checkins",
        "Check-ins, oldest first (a teacher's: those of its courses' sessions)",
        responses.Checkins,
        query=queries.Checkins,
    )
    async def list_checkins(self, request: web.Request) -> web.Response:
        """Check-ins oldest first; a teacher's only those attributed to its courses' sessions
        (filtered in the query, so a short page still means the end)."""
        await auth.require(request, self.db)
        query = parse.query(request, queries.Checkins)
        rows = await self.db.list_checkins(
            auth.list_site(request, query.site),
            query.room,
            query.since,
            query.limit,
            query.after,
            query.student,
            request.get(auth.SCOPE),
        )
        return parse.respond(
            responses.Checkins(
                checkins=[responses.Checkin.of(c) for c in rows],
                next_after=rows[-1].id if len(rows) == query.limit else None,
            )
        )

    @spec.operation(
        "GET",
        "/api/v1/rejections",
        "Counts of rejected input by reason, and the latest rejections",
        responses.Rejections,
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
        return parse.respond(
            responses.Rejections(
                counts=counts, recent=[responses.Rejection.model_validate(r) for r in recent]
            )
        )

    @spec.operation(
        "GET",
        "/api/v1/rooms",
        "Rooms with geofence and environment profile",
        responses.Rooms,
        query=queries.Site,
    )
    async def rooms(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        rows = []
        site = auth.list_site(request, parse.query(request, queries.Site).site)
        for room in await self.db.list_rooms(site):
            profile = await self.db.get_profile(room.site, room.room)
            rows.append(
                responses.Room.from_record(room).model_copy(
                    update={"profile": responses.Profile.of(profile) if profile else None}
                )
            )
        return parse.respond(responses.Rooms(rooms=rows))

    @spec.operation(
        "PATCH",
        "/api/v1/rooms/{site}/{room}",
        "Set a room's geofence (lat and lon together, or both null)",
        responses.RoomResult,
        roles=spec.ADMIN,
        path_params=queries.SiteRoom,
        body=bodies.RoomPatch,
    )
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
        body = await parse.body(request, bodies.RoomPatch)
        given = body.model_fields_set
        moved = "lat" in given or "lon" in given
        lat = body.lat if moved else room.lat
        lon = body.lon if moved else room.lon
        radius = body.radius_m if "radius_m" in given else room.radius_m
        await self.db.update_room(site, name, lat, lon, float(radius))
        if self.bridge is not None:
            self.bridge.forget_room(site, name)
        self.service.rooms.forget((site, name))
        detail = json.dumps(await request.json())  # the change as the admin sent it
        await audit.api(request, self.db, "room_geofence", f"{site}/{name}", detail, site)
        updated = await self.db.get_room(site, name)
        assert updated is not None
        return parse.respond(responses.RoomResult(room=responses.Room.from_record(updated)))

    @spec.operation(
        "POST",
        "/api/v1/rooms/{site}/{room}/profile",
        "Confirm a learned environment profile, or relearn it",
        responses.ProfileResult,
        roles=spec.ADMIN,
        path_params=queries.SiteRoom,
        body=bodies.ProfileAction,
        errors=(409,),
    )
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
        body = await parse.body(request, bodies.ProfileAction)
        try:
            profile = await profiles.apply(
                self.db, site, room, body.action, body.learn_proofs, body.wifi, body.ble
            )
        except profiles.ProfileError as exc:
            raise errors.ApiError(exc.status, exc.code, str(exc)) from exc
        await audit.api(request, self.db, f"profile_{body.action}", f"{site}/{room}", site=site)
        return parse.respond(responses.ProfileResult(profile=responses.Profile.of(profile)))

    @spec.operation(
        "GET",
        "/api/v1/alerts",
        "Alerts (displaced, offline, clock, gap, fork)",
        responses.Alerts,
        query=queries.Alerts,
    )
    async def alerts(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        query = parse.query(request, queries.Alerts)
        rows = await self.db.list_alerts(
            auth.list_site(request, query.site),
            query.open_only,
            query.limit,
            query.after,
            query.kind,
        )
        next_after = rows[-1].id if len(rows) == query.limit else None
        return parse.respond(
            responses.Alerts(alerts=[responses.Alert.of(a) for a in rows], next_after=next_after)
        )

    @spec.operation(
        "POST",
        "/api/v1/alerts/{id}/clear",
        "Clear an alert that does not clear itself",
        responses.AlertResult,
        roles=spec.ADMIN,
        path_params=queries.Id,
        errors=(409,),
    )
    async def clear_alert(self, request: web.Request) -> web.Response:
        """An admin closes an alert that does not clear itself (a fork, a gap never filled)."""
        await auth.require(request, self.db, roles=("admin",))
        alert_id = parse.path(request, queries.Id).id
        existing = await self.db.list_alerts(auth.site_of(request), False, 1, alert_id - 1)
        if not existing or existing[0].id != alert_id:
            raise errors.ApiError(404, "not_found", f"no alert {alert_id}")
        cleared = await self.db.clear_alert(alert_id, self.clock.now_ms())
        if cleared is None:
            raise errors.ApiError(409, "already_cleared", f"alert {alert_id} is already cleared")
        target = f"{cleared.site}/{cleared.device}"
        await audit.api(request, self.db, "alert_clear", target, cleared.kind, cleared.site)
        answer = responses.Alert.of(cleared, "cleared")
        self.hub.publish("alert", parse.plain(answer))
        return parse.respond(responses.AlertResult(alert=answer))

    async def _device_of(self, request: web.Request) -> store.Device:
        site, name = request.match_info["site"], request.match_info["device"]
        found = None
        if names.is_valid(site) and names.is_valid(name) and auth.sees_site(request, site):
            found = await self.db.get_device(site, name)
        if found is None or found.ed25519 is None:
            raise errors.ApiError(404, "not_found", "no such enrolled device")
        return found

    @spec.operation(
        "POST",
        "/api/v1/devices/{site}/{device}/commands",
        "Send a signed command (show_message, status_report) to a device",
        responses.CommandResult,
        roles=spec.ADMIN,
        ok=201,
        path_params=queries.SiteDevice,
        body=bodies.Command,
        errors=(503,),
    )
    async def send_command(self, request: web.Request) -> web.Response:
        """`{"kind": "show_message", "args": {"text", "seconds"}, "ttl_s": 300}` or
        `{"kind": "status_report"}`: signed by central, delivered on the device's cmd topic."""
        await auth.require(request, self.db, roles=("admin",))
        device = await self._device_of(request)
        body = await parse.body(request, bodies.Command)
        if self.bridge is None:
            raise errors.ApiError(503, "broker_unavailable", "this central has no broker link")
        try:
            sent = await self.bridge.send_command(
                device.site, device.device, body.kind, body.args or {}, body.ttl_s
            )
        except command.CommandError as exc:
            raise errors.ApiError(400, "invalid_request", str(exc), {"field": "kind"}) from exc
        except ConnectionError as exc:
            raise errors.ApiError(503, "broker_unavailable", str(exc)) from exc
        target = f"{device.site}/{device.device}"
        await audit.api(
            request, self.db, f"command_{sent['kind']}", target, sent["nonce"], device.site
        )
        return parse.respond(
            responses.CommandResult(command=responses.Command.of(sent)), status=201
        )

    @spec.operation(
        "GET",
        "/api/v1/devices/{site}/{device}/commands",
        "Commands this central sent to the device",
        responses.Commands,
        path_params=queries.SiteDevice,
    )
    async def list_commands(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        device = await self._device_of(request)
        sent = self.bridge.commands.get((device.site, device.device), ()) if self.bridge else ()
        return parse.respond(responses.Commands(commands=[responses.Command.of(c) for c in sent]))

    @spec.operation(
        "GET",
        "/api/v1/devices/{site}/{device}/keys",
        "A device's key history: each key, the seq it signs from, what introduced it",
        responses.DeviceKeys,
        roles=("admin", "auditor"),
        path_params=queries.SiteDevice,
    )
    async def device_keys(self, request: web.Request) -> web.Response:
        """The device's key history (each key, the seq it signs from, and the signed message
        that introduced it), for auditors re-verifying old proofs."""
        await auth.require(request, self.db, roles=("admin", "auditor"))
        device = await self._device_of(request)
        history = await self.db.device_keys(device.site, device.device)
        return parse.respond(
            responses.DeviceKeys(keys=[responses.DeviceKey.of(k, device.ed25519) for k in history])
        )

    @spec.operation(
        "GET",
        "/api/v1/audit",
        "The audit log of admin actions",
        responses.Audit,
        roles=("admin", "auditor"),
        query=queries.Page,
    )
    async def audit_log(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, roles=("admin", "auditor"))
        query = parse.query(request, queries.Page)
        rows = await self.db.list_audit(query.limit, query.after, auth.site_of(request))
        return parse.respond(
            responses.Audit(
                audit=[responses.AuditEntry.from_record(e) for e in rows],
                next_after=rows[-1].id if len(rows) == query.limit else None,
            )
        )

    @spec.operation(
        "GET",
        "/api/v1/tokens",
        "Admin API tokens (ids, roles, names; never the secrets)",
        responses.Tokens,
        roles=spec.ADMIN,
    )
    async def tokens(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, roles=("admin",))
        rows = await self.db.list_admin_tokens(auth.site_of(request))
        return parse.respond(
            responses.Tokens(tokens=[responses.Token.from_record(t) for t in rows])
        )

    @spec.operation(
        "DELETE",
        "/api/v1/tokens/{id}",
        "Revoke a token by its id",
        responses.TokenRevoked,
        roles=spec.ADMIN,
        path_params=queries.TokenId,
    )
    async def revoke_token(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, roles=("admin",))
        token_id = request.match_info["id"]
        if not await self.db.revoke_admin_token(token_id, auth.site_of(request)):
            raise errors.ApiError(404, "not_found", "no token with this id")
        await audit.api(request, self.db, "token_revoke", token_id)
        return parse.respond(responses.TokenRevoked(revoked=token_id))

    @spec.operation(
        "GET",
        "/api/v1/chain-events",
        "Proof-chain gaps and forks",
        responses.ChainEvents,
        query=queries.ChainEvents,
    )
    async def chain_events(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        query = parse.query(request, queries.ChainEvents)
        rows = await self.db.list_chain_events(
            auth.list_site(request, query.site), query.device, query.limit, query.after
        )
        return parse.respond(
            responses.ChainEvents(
                events=[responses.ChainEvent.from_record(e) for e in rows],
                next_after=rows[-1].id if len(rows) == query.limit else None,
            )
        )

    @spec.operation(
        "GET",
        "/api/v1/events",
        "Server-Sent Events: proof, checkin, checkout, device, alert, attendance"
        " (a teacher's: checkin, checkout, attendance of its courses' sessions);"
        " 429 beyond event_streams_per_token open streams of one token",
        {"type": "string"},
        media="text/event-stream",
        errors=(429,),
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
