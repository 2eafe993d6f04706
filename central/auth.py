"""Admin bearer tokens: random, shown once, stored only as SHA-256; roles admin/teacher/auditor."""

from __future__ import annotations

import hashlib
import secrets

from aiohttp import web

from central import errors
from central import store

ROLES = ("admin", "teacher", "auditor")
ACTOR = web.RequestKey("actor", str)  # "<role>:<token id>" of the request, for the audit log
# For a teacher's request: the (site, course) pairs it may see. Absent: the whole site.
SCOPE = web.RequestKey("scope", frozenset)


def new_token() -> str:
    return "rp_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def require(request: web.Request, db: store.Store, roles: tuple[str, ...] = ROLES) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    role = await db.admin_role(token_hash(token.strip()))
    if role is None:
        raise errors.ApiError(401, "unauthorized", "unknown or revoked token")
    if role not in roles:
        raise errors.ApiError(403, "forbidden", f"role {role} may not do this")
    request[ACTOR] = f"{role}:{token_hash(token.strip())[: store.TOKEN_ID_CHARS]}"
    if role == "teacher":
        request[SCOPE] = await db.token_courses(token_hash(token.strip()))
    return role


def sees_course(request: web.Request, site: str, course: str) -> bool:
    scope = request.get(SCOPE)
    return scope is None or (site, course) in scope


def require_course(request: web.Request, site: str, course: str) -> None:
    """Teachers only in their courses (after `require`)."""
    if not sees_course(request, site, course):
        raise errors.ApiError(403, "not_your_course", f"course {site}/{course} is not yours")
