"""Cross-site request forgery guard for the student endpoints (check-in, check-out).

The student cookie is SameSite=Strict already; on top, a state-changing student request must
be JSON (an HTML form on another site cannot send application/json without a CORS preflight,
which central never grants) and, when the browser names its Origin, come from central's own.
"""

from __future__ import annotations

import urllib.parse

from aiohttp import web

from central.core import errors


def origin_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check(request: web.Request, public_url: str) -> None:
    if request.content_type != "application/json":
        raise errors.ApiError(415, "unsupported_media_type", "send the request as application/json")
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() not in (
        origin_of(public_url),
        origin_of(str(request.url)),
    ):
        raise errors.ApiError(403, "cross_site", "this request did not come from the check-in page")
