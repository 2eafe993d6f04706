"""What each API operation takes and answers, declared on its handler with `operation(...)`:
its models for the path, the query, the body and the answer, who may call it and which errors
it may give. The registry this fills is what `document` turns into OpenAPI, and
tests/central/test_openapi.py checks it names exactly the routes the application registers."""

from __future__ import annotations

import dataclasses
import typing

import pydantic

Schema = dict[str, typing.Any]
Handler = typing.TypeVar("Handler", bound=typing.Callable[..., typing.Any])
ADMIN = ("admin",)
READERS = ("admin", "teacher", "auditor")
Content = type[pydantic.BaseModel] | Schema  # a model, or a plain schema (files, streams)


@dataclasses.dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    response: Content
    roles: tuple[str, ...] | None = READERS  # None: public, no token
    ok: int = 200
    path_params: type[pydantic.BaseModel] | None = None
    query: type[pydantic.BaseModel] | None = None
    body: Content | None = None
    body_required: bool = True
    errors: tuple[int, ...] = ()
    media: str = "application/json"
    body_media: str = "application/json"
    tag: str = "admin"


OPERATIONS: dict[tuple[str, str], Operation] = {}


def operation(
    method: str,
    path: str,
    summary: str,
    response: Content,
    *,
    roles: tuple[str, ...] | None = READERS,
    ok: int = 200,
    path_params: type[pydantic.BaseModel] | None = None,
    query: type[pydantic.BaseModel] | None = None,
    body: Content | None = None,
    body_required: bool = True,
    errors: tuple[int, ...] = (),
    media: str = "application/json",
    body_media: str = "application/json",
    tag: str = "admin",
) -> typing.Callable[[Handler], Handler]:
    """Declares the handler's operation; the handler itself is returned unchanged (it parses
    with `parse` where its checks belong: after the token, before the work)."""
    found = Operation(
        method.lower(),
        path,
        summary,
        response,
        roles,
        ok,
        path_params,
        query,
        body,
        body_required,
        errors,
        media,
        body_media,
        tag,
    )
    if (found.method, path) in OPERATIONS and OPERATIONS[found.method, path] != found:
        raise ValueError(f"{method} {path} is declared twice")
    OPERATIONS[found.method, path] = found

    def mark(handler: Handler) -> Handler:
        return handler

    return mark
