"""Reading and writing API values: query parameters checked with clear errors, times as
RFC 3339, JSON bodies."""

from __future__ import annotations

import datetime
import typing

from aiohttp import web

from central import errors
from edge_agent.protocol import names


def int_param(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise errors.ApiError(
            400, "invalid_request", f"{key} must be an integer", {"field": key}
        ) from exc
    if not low <= value <= high:
        raise errors.ApiError(
            400, "invalid_request", f"{key} must be between {low} and {high}", {"field": key}
        )
    return value


def path_int(request: web.Request, key: str) -> int:
    raw = request.match_info[key]
    if not raw.isdigit() or len(raw) > 18:
        raise errors.ApiError(404, "not_found", f"no such {key}: {raw[:40]}")
    return int(raw)


def name_param(request: web.Request, key: str, required: bool = False) -> str | None:
    value = request.query.get(key)
    if value is None:
        if required:
            raise errors.ApiError(400, "invalid_request", f"{key} is required", {"field": key})
        return None
    if not names.is_valid(value):
        raise errors.ApiError(400, "invalid_request", f"{key} is not a valid name", {"field": key})
    return value


def time_param(request: web.Request, key: str) -> int | None:
    raw = request.query.get(key)
    if raw is None:
        return None
    if raw.isdigit():
        return int(raw)
    try:
        moment = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise errors.ApiError(
            400, "invalid_request", f"{key} must be RFC 3339 or unix ms", {"field": key}
        ) from exc
    if moment.tzinfo is None:
        raise errors.ApiError(400, "invalid_request", f"{key} needs a timezone", {"field": key})
    return int(moment.timestamp() * 1000)


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(
        timespec="milliseconds"
    )


async def json_object(request: web.Request) -> dict[str, typing.Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise errors.ApiError(400, "invalid_json", "body must be JSON") from exc
    if not isinstance(body, dict):
        raise errors.ApiError(400, "invalid_request", "body must be a JSON object")
    return body
