"""HTTP routes for outbound webhooks: admins register receivers (the signing secret is shown
once), list and delete them, and read each one's delivery log."""

from __future__ import annotations

import json
import typing

from aiohttp import web

from central.core import errors
from central.http import audit
from central.http import auth
from central.http import webhooks
from central.http.apimodels import bodies
from central.http.apimodels import parse
from central.http.apimodels import queries
from central.http.apimodels import responses
from central.http.apimodels import spec
from central.storage import database
from central.storage import store

MANAGERS = ("admin",)
READERS = ("admin", "auditor")
MAX_WEBHOOKS = 50
LOOKUP_S = 5.0  # a receiver's name that does not resolve within this is checked at delivery


class WebhooksApi:
    def __init__(
        self,
        db: database.Database,
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

    @spec.operation(
        "POST",
        "/api/v1/webhooks",
        "Register a webhook; the answer holds its signing secret, shown only once",
        responses.WebhookCreated,
        roles=MANAGERS,
        ok=201,
        body=bodies.Webhook,
        errors=(404, 409),
        tag="webhooks",
    )
    async def add(self, request: web.Request) -> web.Response:
        """`{"url", "events": ["checkin", "session_closed"], "description"}`; the answer holds
        the signing secret, which is never shown again. The webhook belongs to the token's
        site and receives only its events; an operator may name a `site` (without one, the
        webhook receives every site's events)."""
        await auth.require(request, self.db, MANAGERS)
        body = await parse.body(request, bodies.Webhook)
        site = auth.list_site(request, body.site)
        if site is not None and not await self.db.site_exists(site):
            raise auth.not_found("no such site")
        url = body.url
        try:
            await self.guard.check_url(url, LOOKUP_S)
        except webhooks.Blocked as exc:
            raise errors.ApiError(
                400,
                "invalid_request",
                f"url host is or resolves to an internal address ({exc.reason}): webhooks"
                " post only to globally reachable addresses, unless webhook_allow_hosts or"
                " webhook_allow_networks lists it",
                {"field": "url", "reason": exc.reason},
            ) from exc
        kinds, description = tuple(body.events), body.description
        if len(await self.db.list_webhooks(site)) >= MAX_WEBHOOKS:
            raise errors.ApiError(
                409, "too_many_webhooks", f"at most {MAX_WEBHOOKS} webhooks; delete one first"
            )
        secret = webhooks.new_secret()
        hook = await self.db.add_webhook(url, kinds, description, secret, self.now_ms(), site)
        self.changed()
        detail = json.dumps({"url": url, "events": list(kinds)})
        await audit.api(request, self.db, "webhook_add", str(hook.id), detail, site)
        return parse.respond(
            responses.WebhookCreated(webhook=responses.Webhook.from_record(hook), secret=secret),
            201,
        )

    @spec.operation(
        "GET",
        "/api/v1/webhooks",
        "Registered webhooks (never their secrets)",
        responses.Webhooks,
        roles=READERS,
        tag="webhooks",
    )
    async def list_webhooks(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, READERS)
        rows = await self.db.list_webhooks(auth.site_of(request))
        return parse.respond(
            responses.Webhooks(webhooks=[responses.Webhook.from_record(w) for w in rows])
        )

    async def _webhook(self, request: web.Request) -> store.Webhook:
        webhook_id = parse.path(request, queries.Id).id
        hooks = await self.db.list_webhooks(auth.site_of(request))
        found = next((w for w in hooks if w.id == webhook_id), None)
        if found is None:
            raise errors.ApiError(404, "not_found", f"no webhook {webhook_id}")
        return found

    @spec.operation(
        "DELETE",
        "/api/v1/webhooks/{id}",
        "Delete a webhook and its delivery log",
        responses.Deleted,
        roles=MANAGERS,
        path_params=queries.Id,
        tag="webhooks",
    )
    async def delete(self, request: web.Request) -> web.Response:
        """Stops deliveries at once and drops the webhook's delivery log."""
        await auth.require(request, self.db, MANAGERS)
        hook = await self._webhook(request)
        if not await self.db.delete_webhook(hook.id):
            raise errors.ApiError(404, "not_found", f"no webhook {hook.id}")
        self.changed()
        await audit.api(request, self.db, "webhook_delete", str(hook.id), hook.url, hook.site)
        return parse.respond(responses.Deleted(deleted=hook.id))

    @spec.operation(
        "GET",
        "/api/v1/webhooks/{id}/deliveries",
        "A webhook's delivery log: attempts, last status or error, next retry",
        responses.Deliveries,
        roles=READERS,
        path_params=queries.Id,
        query=queries.Page,
        tag="webhooks",
    )
    async def deliveries(self, request: web.Request) -> web.Response:
        await auth.require(request, self.db, READERS)
        hook = await self._webhook(request)
        query = parse.query(request, queries.Page)
        rows = await self.db.list_webhook_deliveries(hook.id, query.limit, query.after)
        return parse.respond(
            responses.Deliveries(
                deliveries=[responses.Delivery.of(d) for d in rows],
                next_after=rows[-1].id if len(rows) == query.limit else None,
            )
        )
