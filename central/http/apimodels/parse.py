"""Requests into models and models into responses. Every validation failure becomes the one
error format (`central.core.errors`): 400 `invalid_request` naming the field (`details.field`), or
the unknown fields (`details.fields`); a body that is not JSON is 400 `invalid_json`."""

from __future__ import annotations

import typing

import pydantic
from aiohttp import web

from central.core import errors
from central.http.apimodels import fields

Model = typing.TypeVar("Model", bound=pydantic.BaseModel)
_NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type", "dict_type"})


def error_of(model: type[pydantic.BaseModel], exc: pydantic.ValidationError) -> errors.ApiError:
    """The one API error for a model's validation failure: unknown fields first (all of
    them), else the first refused field, in the model's own words where it has them."""
    problems = exc.errors(include_url=False, include_input=False)
    if any(p["type"] == "json_invalid" for p in problems):
        return errors.ApiError(400, "invalid_json", "body must be JSON")
    unknown = sorted(
        str(p["loc"][0]) for p in problems if p["type"] == "extra_forbidden" and len(p["loc"]) == 1
    )
    if unknown:
        return errors.ApiError(400, "invalid_request", "unknown fields", {"fields": unknown})
    first = problems[0]
    loc = first["loc"]
    named = (first.get("ctx") or {}).get("field")
    if not loc and not named:
        if first["type"] in _NOT_AN_OBJECT:
            return errors.ApiError(400, "invalid_request", "body must be a JSON object")
        return errors.ApiError(400, "invalid_request", first["msg"])
    field = str(loc[0]) if loc else str(named)
    if first["type"] == fields.MESSAGE:
        text = first["msg"]
    elif first["type"] == fields.PROBLEM:
        text = f"{field} {first['msg']}"
    elif first["type"] == "missing" and len(loc) == 1:
        text = f"{field} is required"
    else:
        wording: dict[str, str] = getattr(model, "MESSAGES", {})
        text = wording.get(field) or f"{'.'.join(map(str, loc))}: {first['msg']}"
    return errors.ApiError(400, "invalid_request", text, {"field": field})


def validate(model: type[Model], data: typing.Any) -> Model:
    """A Python value (a CSV row, a dict) through the model, refused as the API refuses."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise error_of(model, exc) from exc


def validate_json(model: type[Model], raw: bytes) -> Model:
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise error_of(model, exc) from exc


async def body(request: web.Request, model: type[Model]) -> Model:
    """The JSON body through the model (aiohttp has already capped its size: 413)."""
    return validate_json(model, await request.read())


async def optional_body(request: web.Request, model: type[Model]) -> Model:
    """As `body`, an absent body counting as `{}`."""
    raw = await request.read() if request.can_read_body else b""
    return validate_json(model, raw or b"{}")


def query(request: web.Request, model: type[Model]) -> Model:
    """The query string through the model (the first of repeated keys; others ignored)."""
    return validate(model, {key: request.query[key] for key in request.query})


def path(request: web.Request, model: type[Model]) -> Model:
    """The path's parameters through the model."""
    return validate(model, dict(request.match_info))


def respond(result: pydantic.BaseModel, status: int = 200) -> web.Response:
    """The response model as JSON. Fields a model declares with a default are left out while
    unset (optional parts of an answer); every other field is always there, null or not."""
    return web.Response(
        text=result.model_dump_json(exclude_unset=True),
        status=status,
        content_type="application/json",
    )


def plain(result: pydantic.BaseModel) -> dict[str, typing.Any]:
    """The response model as the JSON-ready dict the event stream publishes."""
    return result.model_dump(mode="json", exclude_unset=True)
