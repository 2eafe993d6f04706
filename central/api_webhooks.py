"""HTTP routes for outbound webhooks: admins register receivers (the signing secret is shown
once), list and delete them, and read each one's delivery log."""

from __future__ import annotations

import json
import typing

from aiohttp import web

from central import audit
from central import auth
from central import errors
from central import params
from central import store
from central import webhooks
from edge_agent.protocol import names

MANAGERS = ("admin",)
READERS = ("admin", "auditor")
MAX_WEBHOOKS = 50
MAX_DESCRIPTION = 200
LOOKUP_S = 5.0  # a receiver's name that does not resolve within this is checked at delivery


def webhook_json(hook: store.Webhook) -> dict[str, typing.Any]:
    return {
        "id": hook.id,
        "site": hook.site,
        "url": hook.url,
        "events": list(hook.events),
        "description": hook.description,
        "created_at": params.iso(hook.created_at),
    }


def delivery_json(delivery: store.WebhookDelivery) -> dict[str, typing.Any]:
    if delivery.delivered_at is not None:
        state = "delivered"
    elif delivery.next_attempt_at is not None:
        state = "pending"
    else:
        state = "failed"
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "state": state,
        "created_at": params.iso(delivery.created_at),
        "attempts": delivery.attempts,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "next_attempt_at": params.iso(delivery.next_attempt_at),
        "delivered_at": params.iso(delivery.delivered_at),
    }


def _events(value: object) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v in webhooks.EVENT_TYPES for v in value)
        or len(set(value)) != len(value)
    ):
        raise errors.ApiError(
            400,
            "invalid_request",
            f"events must be a non-empty list of distinct {list(webhooks.EVENT_TYPES)}",
            {"field": "events"},
        )
    return tuple(value)


def _description(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise errors.ApiError(
            400,
            "invalid_request",
            f"description must be text up to {MAX_DESCRIPTION} characters",
            {"field": "description"},
        )
    if any(ord(c) < 32 and c != "\t" for c in value):
        raise errors.ApiError(
            400,
            "invalid_request",
            "description must not contain control characters",
            {"field": "description"},
        )
    return value


class WebhooksApi:
    def __init__(
        self,
        db: store.Store,
        now_ms: typing.Callable[[], int],
        changed: typing.Callable[[], None] = lambda: None,
        guard: webhooks.Guard | None = None,
    ) -> None:
        self.db = db
        self.now_ms = now_ms
        self.changed = changed  # tells the dispatcher to reload the subscriptions
        self.guard = guard or webhooks.Guard()  # the dispatcher's: the same allowlist

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/webhooks", self.add)
        app.router.add_get("/api/v1/webhooks", self.list_webhooks)
        app.router.add_delete("/api/v1/webhooks/{id}", self.delete)
        app.router.add_get("/api/v1/webhooks/{id}/deliveries", self.deliveries)

    async def add(self, request: web.Request) -> web.Response:
        """`{"url", "events": ["checkin", "session_closed"], "description"}`; the answer holds
        the signing secret, which is never shown again. The webhook belongs to the token's
        site and receives only its events; an operator may name a `site` (without one, the
        webhook receives every site's events)."""
        await auth.require(request, self.db, MANAGERS)
        body = await params.json_object(request)
        unknown = sorted(set(body) - {"url", "events", "description", "site"})
        if unknown:
            raise errors.ApiError(400, "invalid_request", "unknown fields", {"fields": unknown})
        given = body.get("site")
        if "site" in body and not names.is_valid(given):
            raise errors.ApiError(400, "invalid_request", "site must be a name", {"field": "site"})
        site = auth.list_site(request, given)
        if site is not None and not await self.db.site_exists(site):
            raise auth.not_found("no such site")
        try:
            url = webhooks.check_url(body.get("url"))
            await self.guard.check_url(url, LOOKUP_S)
        except webhooks.InvalidUrl as exc:
            raise errors.ApiError(400, "invalid_request", str(exc), {"field": "url"}) from exc
        except webhooks.Blocked as exc:
            raise errors.ApiError(
                400,
                "invalid_request",
                f"url host is or resolves to an internal address ({exc.reason}): webhooks"
                " post only to globally reachable addresses, unless webhook_allow_hosts or"
                " webhook_allow_networks lists it",
                {"field": "url", "reason": exc.reason},
            ) from exc
        kinds = _events(body.get("events"))
        description = _description(body.get("description", ""))
        if len(await self.db.list_webhooks(site)) >= MAX_WEBHOOKS:
            raise errors.ApiError(
                409, "too_many_webhooks", f"at most {MAX_WEBHOOKS} webhooks; delete one first"
            )
        secret = webhooks.new_secret()
        hook = await self.db.add_webhook(url, kinds, description, secret, self.now_ms(), site)
        self.changed()
        detail = json.dumps({"url": url, "events": list(kinds)})
        await audit.api(request, self.db, "webhook_add", str(hook.id), detail, site)
        return web.json_response({"webhook": webhook_json(hook), "secret": secret}, status=201)

    async def list_webhooks(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, READERS)
        rows = await self.db.list_webhooks(auth.site_of(request))
        return web.json_response({"webhooks": [webhook_json(w) for w in rows]})

    async def _webhook(self, request: web.Request) -> store.Webhook:
        webhook_id = params.path_int(request, "id")
        hooks = await self.db.list_webhooks(auth.site_of(request))
        found = next((w for w in hooks if w.id == webhook_id), None)
        if found is None:
            raise errors.ApiError(404, "not_found", f"no webhook {webhook_id}")
        return found

    async def delete(self, request: web.Request) -> web.Response:
        """Stops deliveries at once and drops the webhook's delivery log."""
        await auth.require(request, self.db, MANAGERS)
        hook = await self._webhook(request)
        if not await self.db.delete_webhook(hook.id):
            raise errors.ApiError(404, "not_found", f"no webhook {hook.id}")
        self.changed()
        await audit.api(request, self.db, "webhook_delete", str(hook.id), hook.url, hook.site)
        return web.json_response({"deleted": hook.id})

    async def deliveries(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, READERS)
        hook = await self._webhook(request)
        limit = params.int_param(request, "limit", 100, 1, 1000)
        rows = await self.db.list_webhook_deliveries(
            hook.id, limit, params.int_param(request, "after", 0, 0, 2**62)
        )
        return web.json_response(
            {
                "deliveries": [delivery_json(d) for d in rows],
                "next_after": rows[-1].id if len(rows) == limit else None,
            }
        )
