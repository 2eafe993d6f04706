"""The HTTP middleware that gives every request an id and turns every failure into the one
error format of errors.py: ApiError as raised, a store outage as 503, anything else as a
logged 500 that quotes the request id."""

from __future__ import annotations

import itertools
import logging
import secrets
import typing

from aiohttp import web

from central.core import errors
from central.core import outage
from central.storage import stores

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


_ID_PREFIX = secrets.token_hex(4)  # per process: ids from several centrals do not collide
_ID_COUNTER = itertools.count(1)


def _next_id() -> str:
    """Unique per request without a random syscall each time (uuid4 costs one)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


@web.middleware
async def middleware(
    request: web.Request,
    handler: typing.Callable[[web.Request], typing.Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "")[:64] or _next_id()
    if not request_id.replace("-", "").isalnum():
        request_id = _next_id()
    request[errors.REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except errors.ApiError as exc:
        log.info(
            "%s %s -> %d %s [%s]",
            request.method,
            request.path,
            exc.status,
            exc.code,
            request_id,
            extra={"request_id": request_id, "status": exc.status, "code": exc.code},
        )
        response = web.json_response(
            errors.body(request, exc.code, exc.message, exc.details),
            status=exc.status,
            headers=exc.headers,
        )
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            exc.headers["X-Request-Id"] = request_id
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        response = web.json_response(errors.body(request, code, exc.reason, {}), status=exc.status)
    except Exception as exc:
        if stores.is_outage(exc):
            outage.STORE.failed(exc)  # logged once per state change, not per request
            return _unavailable(request, request_id)
        log.exception(
            "internal error on %s %s [%s]",
            request.method,
            request.path,
            request_id,
            extra={"request_id": request_id},
        )
        response = web.json_response(
            errors.body(request, "internal", "internal error; quote the request id", {}), status=500
        )
    if request.method not in ("GET", "HEAD", "OPTIONS") and response.status < 300:
        outage.STORE.succeeded()  # a write went through
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response


def _unavailable(request: web.Request, request_id: str) -> web.Response:
    message = "the store cannot read or write right now; retry later"
    headers = {"Retry-After": str(outage.RETRY_AFTER_S), "X-Request-Id": request_id}
    if request.path.startswith("/api/"):
        return web.json_response(
            errors.body(request, "store_unavailable", message, {}), status=503, headers=headers
        )
    return web.Response(
        text=f"Service temporarily unavailable: {message}.\n", status=503, headers=headers
    )
