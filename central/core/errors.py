"""One error format for every API failure: {"error": {code, message, details, request_id}}.
Services raise ApiError; the HTTP middleware turns it (and any other failure) into a response."""

from __future__ import annotations

import typing

from aiohttp import web

REQUEST_ID = web.RequestKey("request_id", str)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, typing.Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


def body(
    request: web.Request, code: str, message: str, details: dict[str, typing.Any]
) -> dict[str, typing.Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details,
            "request_id": request.get(REQUEST_ID, ""),
        }
    }
