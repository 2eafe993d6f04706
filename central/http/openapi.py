"""The OpenAPI 3.1 description of the JSON API, served at GET /api/v1/openapi.json and
generated from the models each handler declares (`central.http.apimodels`): the models that
validate the requests are the ones described. tests/central/test_openapi.py checks that it
names exactly the routes the application registers and runs schemathesis against a live
central, answers included."""

from __future__ import annotations

import functools
import typing

from aiohttp import web

from central.http import api  # noqa: F401  (each route module declares its operations on import)
from central.http import api_attendance  # noqa: F401
from central.http import api_dashboard  # noqa: F401
from central.http import api_evidence  # noqa: F401
from central.http import api_reports  # noqa: F401
from central.http import api_webhooks  # noqa: F401
from central.http.apimodels import document as document_mod
from central.http.apimodels import spec

PATH = "/api/v1/openapi.json"

spec.operation(
    "GET", PATH, "This description (OpenAPI 3.1)", {"type": "object"}, roles=None, tag="meta"
)


@functools.cache
def document() -> dict[str, typing.Any]:
    return document_mod.build(spec.OPERATIONS.values())


def routes(app: web.Application) -> None:
    app.router.add_get(PATH, serve)


async def serve(request: web.Request) -> web.Response:
    return web.json_response(document(), headers={"Cache-Control": "public, max-age=300"})
