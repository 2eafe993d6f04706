"""Reading and writing API values: query parameters checked with clear errors, times as
RFC 3339, JSON bodies."""

from __future__ import annotations

import datetime
import typing

from aiohttp import web

from central import errors
from edge_agent.protocol import names

# Unix ms up to the end of year 9999 (what RFC 3339 can say, and what `iso` can print).
MAX_TIME_MS = 253_402_300_799_999
MAX_TIME_TEXT = 64  # longer than any RFC 3339 time with a fraction and an offset
MAX_PATH_ID = 10**18 - 1  # as the OpenAPI document says


def ascii_int(raw: str, high: int) -> int | None:
    """`raw` as 0..high when it is ASCII digits only (no sign, space, `_` or other script's
    digits, which `int` and `str.isdigit` accept), else None. The length is checked first, so
    a 5,000-digit value costs no conversion."""
    if not raw or len(raw) > len(str(high)) or not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return value if value <= high else None


def int_param(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    value = ascii_int(raw, high)
    if value is None or value < low:
        raise errors.ApiError(
            400,
            "invalid_request",
            f"{key} must be an integer between {low} and {high} (ASCII digits)",
            {"field": key},
        )
    return value


def path_int(request: web.Request, key: str) -> int:
    raw = request.match_info[key]
    value = ascii_int(raw, MAX_PATH_ID)
    if value is None:
        raise errors.ApiError(
            400,
            "invalid_request",
            f"{key} in the path must be an integer between 0 and {MAX_PATH_ID} (ASCII digits)",
            {"field": key},
        )
    return value


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
    """Unix ms (ASCII digits) or RFC 3339 with a timezone, within year 1970..9999."""
    raw = request.query.get(key)
    if raw is None:
        return None
    problem = f"{key} must be RFC 3339 with a timezone or unix ms (0..{MAX_TIME_MS})"
    if raw.isascii() and raw.isdigit():
        value = ascii_int(raw, MAX_TIME_MS)
        if value is None:
            raise errors.ApiError(400, "invalid_request", problem, {"field": key})
        return value
    if len(raw) > MAX_TIME_TEXT or not raw.isascii():
        raise errors.ApiError(400, "invalid_request", problem, {"field": key})
    try:
        moment = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise errors.ApiError(400, "invalid_request", problem, {"field": key}) from exc
    if moment.tzinfo is None:
        raise errors.ApiError(400, "invalid_request", f"{key} needs a timezone", {"field": key})
    try:
        value = int(moment.timestamp() * 1000)
    except (OverflowError, ValueError) as exc:  # 9999-12-31T23:59-01:00 is past the end
        raise errors.ApiError(400, "invalid_request", problem, {"field": key}) from exc
    if not 0 <= value <= MAX_TIME_MS:
        raise errors.ApiError(400, "invalid_request", problem, {"field": key})
    return value


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
