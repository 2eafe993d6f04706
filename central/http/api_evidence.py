"""HTTP routes for evidence: a check-in's bundle, verification links, and the public
verification page behind a link."""

from __future__ import annotations

import html
import importlib.resources
import string
import time
import typing

from aiohttp import web

from central.checkin import evidence
from central.checkin import records
from central.core import clock as clock_mod
from central.core import errors
from central.core import keyring
from central.core import params
from central.core import ratelimit
from central.core import settings as settings_mod
from central.domain import netaddr
from central.http import audit
from central.http import auth
from central.http import clientip
from central.http.apimodels import bodies
from central.http.apimodels import parse
from central.http.apimodels import queries
from central.http.apimodels import responses
from central.http.apimodels import spec
from central.storage import database
from central.storage import store

LINK_ROLES = ("admin", "teacher")
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class EvidenceApi:
    def __init__(
        self,
        db: database.Database,
        keys: keyring.Keyring,
        settings: settings_mod.CentralSettings,
        clock: clock_mod.Clock,
    ) -> None:
        self.db = db
        self.keys = keys
        self.settings = settings
        self.clock = clock
        self.proxies = netaddr.networks(settings.trusted_proxies)
        self.views = ratelimit.RateLimiter(settings.link_views_per_client_per_minute)
        self.page = string.Template(
            importlib.resources.files("central.http.pages").joinpath("verify.html").read_text()
        )

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/checkins/{id}/evidence", self.download)
        app.router.add_post("/api/v1/checkins/{id}/links", self.add_link)
        app.router.add_delete("/api/v1/links/{id}", self.revoke_link)
        app.router.add_get("/v/{token}", self.verify_page)
        app.router.add_get("/v/{token}/bundle.json", self.link_bundle)

    async def _checkin(self, request: web.Request, checkin_id: int) -> store.Checkin:
        checkin = await self.db.get_checkin(checkin_id)
        if checkin is None or not auth.sees_site(request, checkin.site):
            raise errors.ApiError(404, "not_found", f"no check-in {checkin_id}")
        if auth.SCOPE in request:  # a teacher: only check-ins of their courses' sessions
            session = (
                await self.db.get_session(checkin.session_id)
                if checkin.session_id is not None
                else None
            )
            if session is None:
                raise errors.ApiError(403, "not_your_course", "this check-in is in no session")
            auth.require_course(request, session.site, session.course)
        return checkin

    async def _bundle(self, checkin: store.Checkin) -> tuple[bytes, bytes]:
        try:
            return await records.bundle(self.db, self.keys, checkin, self.clock.now_ms())
        except records.Pending as exc:
            raise errors.ApiError(409, "evidence_pending", str(exc)) from exc

    @spec.operation(
        "GET",
        "/api/v1/checkins/{id}/evidence",
        "A check-in's evidence bundle (signed record, proofs, device keys)",
        {"type": "object"},
        path_params=queries.Id,
        errors=(409,),
    )
    async def download(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db)
        checkin = await self._checkin(request, parse.path(request, queries.Id).id)
        data, _ = await self._bundle(checkin)
        return web.Response(
            body=data,
            content_type="application/json",
            headers={
                "Content-Disposition": f'attachment; filename="roomproof-record-{checkin.id}.json"'
            },
        )

    @spec.operation(
        "POST",
        "/api/v1/checkins/{id}/links",
        "A verification link to a check-in's evidence, for a third party",
        responses.LinkResult,
        roles=LINK_ROLES,
        ok=201,
        path_params=queries.Id,
        body=bodies.Link,
        body_required=False,
        errors=(409,),
    )
    async def add_link(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, LINK_ROLES)
        checkin = await self._checkin(request, parse.path(request, queries.Id).id)
        body = await parse.optional_body(request, bodies.Link)
        ttl_days = body.ttl_days or self.settings.verify_link_ttl_days
        await self._bundle(checkin)  # a link to evidence that cannot be built is no use
        token = records.new_link_token()
        now = self.clock.now_ms()
        link = await self.db.add_link(
            records.link_hash(token), checkin.id, now, now + int(ttl_days * 86400_000)
        )
        await audit.api(
            request, self.db, "link_create", str(checkin.id), f"link {link.id}", checkin.site
        )
        answer = responses.Link(
            id=link.id,
            checkin_id=checkin.id,
            url=f"{self.settings.public_base}/v/{token}",
            expires_at=link.expires_at,
        )
        return parse.respond(responses.LinkResult(link=answer), status=201)

    @spec.operation(
        "DELETE",
        "/api/v1/links/{id}",
        "Revoke a verification link",
        responses.LinkRevoked,
        roles=LINK_ROLES,
        path_params=queries.Id,
    )
    async def revoke_link(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, LINK_ROLES)
        link_id = parse.path(request, queries.Id).id
        link = await self.db.get_link(link_id)
        checkin = await self.db.get_checkin(link.checkin_id) if link is not None else None
        if (
            link is None
            or link.revoked_at is not None
            or checkin is None
            or not auth.sees_site(request, checkin.site)
        ):
            raise errors.ApiError(404, "not_found", f"no active link {link_id}")
        await self._checkin(request, checkin.id)  # a teacher: only links in its courses
        if not await self.db.revoke_link(link_id, self.clock.now_ms()):
            raise errors.ApiError(404, "not_found", f"no active link {link_id}")
        await audit.api(request, self.db, "link_revoke", str(link_id), site=checkin.site)
        return parse.respond(responses.LinkRevoked(revoked=link_id))

    async def _link(self, request: web.Request) -> tuple[store.Checkin | None, str]:
        """The link's check-in, or None and why not."""
        client = clientip.client_ip(request, self.proxies)
        self.views.check(client, time.monotonic(), "too many verification requests; wait")
        token = request.match_info["token"]
        if not 16 <= len(token) <= 64 or not set(token) <= TOKEN_CHARS:
            return None, "This verification link is not valid."
        link = await self.db.find_link(records.link_hash(token))
        if link is None:
            return None, "This verification link is not valid."
        if link.revoked_at is not None:
            return None, "This verification link has been revoked."
        if link.expires_at <= self.clock.now_ms():
            return None, "This verification link has expired."
        return await self.db.get_checkin(link.checkin_id), ""

    async def link_bundle(self, request: web.Request) -> web.Response:
        checkin, why = await self._link(request)
        if checkin is None:
            raise web.HTTPNotFound(text=why)
        data, _ = await self._bundle(checkin)
        return web.Response(
            body=data,
            content_type="application/json",
            headers={
                "Content-Disposition": f'attachment; filename="roomproof-record-{checkin.id}.json"',
                "Cache-Control": "no-store",
                "X-Robots-Tag": "noindex",
            },
        )

    async def verify_page(self, request: web.Request) -> web.Response:
        checkin, why = await self._link(request)
        result: dict[str, typing.Any]
        if checkin is None:
            result = {"valid": False, "reason": "link", "message": why}
            status = 404
        else:
            try:
                data, device_key = await self._bundle(checkin)
                verified = evidence.verify_bundle(data, device_key, self.keys.signing.public)
                result = {"valid": True, "record": verified.record, "checks": verified.checks}
                status = 200
            except errors.ApiError as exc:
                result = {"valid": False, "reason": exc.code, "message": exc.message}
                status = 409
            except evidence.EvidenceError as exc:
                result = {"valid": False, "reason": exc.reason, "message": str(exc)}
                status = 200
        headers = {
            "Cache-Control": "no-store",
            "X-Robots-Tag": "noindex",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; style-src 'self'",
        }
        if request.query.get("format") == "json":
            return web.json_response(result, status=status, headers=headers)
        return web.Response(
            text=self._render(result), status=status, content_type="text/html", headers=headers
        )

    def _render(self, result: dict[str, typing.Any]) -> str:
        if not result["valid"]:
            return self.page.substitute(
                title="Record not verified",
                css="fail",
                summary=html.escape(result["message"]),
                details="",
            )
        record = result["record"]
        rows = [
            ("Record", str(record["record"])),
            ("Student", record["student_id"]),
            ("Room", f"{record['site']} / {record['room']}"),
            ("Room device", record["device"]),
            ("Checked in", params.iso(record["checked_in_at"]) or ""),
            ("Status", record["status"]),
            ("Flags", "; ".join(record.get("flags") or []) or "none"),
            ("Device verdict", str(record.get("device_verdict"))),
        ]
        table = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
        )
        checks = "".join(f"<li>{html.escape(c)}</li>" for c in result["checks"])
        return self.page.substitute(
            title="Record verified",
            css="ok",
            summary="The signatures of the room's device and of central check out.",
            details=f"<table>{table}</table><ul>{checks}</ul>",
        )
