"""The strict rules for API values the models (`central.apimodels.fields`) build on: ASCII
digits with the length checked first, times as unix ms or RFC 3339 with a timezone, and
times printed as RFC 3339. `int_param` and `time_param` read one query parameter by them."""

from __future__ import annotations

import datetime

from aiohttp import web

from central.core import errors

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


TIME_PROBLEM = f"must be RFC 3339 with a timezone or unix ms (0..{MAX_TIME_MS})"


class TimeError(ValueError):
    """A time that is neither unix ms nor RFC 3339 with a timezone in year 1970..9999; the
    message is a predicate ("must be ...") of the parameter."""


def parse_time(raw: str) -> int:
    """Unix ms (ASCII digits) or RFC 3339 with a timezone, within year 1970..9999."""
    if raw.isascii() and raw.isdigit():
        value = ascii_int(raw, MAX_TIME_MS)
        if value is None:
            raise TimeError(TIME_PROBLEM)
        return value
    if len(raw) > MAX_TIME_TEXT or not raw.isascii():
        raise TimeError(TIME_PROBLEM)
    try:
        moment = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise TimeError(TIME_PROBLEM) from exc
    if moment.tzinfo is None:
        raise TimeError("needs a timezone")
    try:
        value = int(moment.timestamp() * 1000)
    except (OverflowError, ValueError) as exc:  # 9999-12-31T23:59-01:00 is past the end
        raise TimeError(TIME_PROBLEM) from exc
    if not 0 <= value <= MAX_TIME_MS:
        raise TimeError(TIME_PROBLEM)
    return value


def time_param(request: web.Request, key: str) -> int | None:
    """Unix ms (ASCII digits) or RFC 3339 with a timezone, within year 1970..9999."""
    raw = request.query.get(key)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except TimeError as exc:
        raise errors.ApiError(400, "invalid_request", f"{key} {exc}", {"field": key}) from exc


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(
        timespec="milliseconds"
    )
