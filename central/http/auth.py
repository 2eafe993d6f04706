"""Admin bearer tokens: random, shown once, stored only as SHA-256.

Roles: admin, teacher and auditor act in exactly one site (a teacher further only in its
courses); operator (created only from the command line) spans every site. Another site's
resource answers exactly like one that does not exist: `require_site` raises the same 404.
"""

from __future__ import annotations

import hashlib
import secrets

from aiohttp import web

from central.core import errors
from central.storage import database
from central.storage import store

SITE_ROLES = ("admin", "teacher", "auditor")  # each bound to one site
OPERATOR = "operator"  # every site; CLI-created only
ROLES = (*SITE_ROLES, OPERATOR)
ACTOR = web.RequestKey("actor", str)  # "<role>:<token id>" of the request, for the audit log
# For a teacher's request: the (site, course) pairs it may see. Absent: the whole site.
SCOPE = web.RequestKey("scope", frozenset)
# The token's site; absent for an operator.
SITE = web.RequestKey("site", str)


class UnscopedTokens(RuntimeError):
    """Admin, teacher or auditor tokens from before sites were sealed, with no site."""


def new_token() -> str:
    return "rp_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def not_found(message: str = "no such resource") -> errors.ApiError:
    """What a resource of another site answers: exactly what a resource that does not exist
    answers (handlers pass their own not-found message)."""
    return errors.ApiError(404, "not_found", message)


async def require(
    request: web.Request, db: database.Database, roles: tuple[str, ...] = ROLES
) -> str:
    """The caller's role (401 without a valid token, 403 for a role not in `roles`; an
    operator passes wherever an admin does). Records the token's site (`site_of`) and a
    teacher's courses on the request."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    hashed = token_hash(token.strip())
    grant = await db.admin_grant(hashed)
    if grant is None or (grant.role != OPERATOR and grant.site is None):
        # a site-less admin token from before sites were sealed acts nowhere
        raise errors.ApiError(401, "unauthorized", "unknown or revoked token")
    role = grant.role
    allowed = (*roles, OPERATOR) if "admin" in roles else roles
    if role not in allowed:
        raise errors.ApiError(403, "forbidden", f"role {role} may not do this")
    request[ACTOR] = f"{role}:{hashed[: store.TOKEN_ID_CHARS]}"
    if grant.site is not None and role != OPERATOR:
        request[SITE] = grant.site
    if role == "teacher":
        request[SCOPE] = await db.token_courses(hashed)
    return role


def site_of(request: web.Request) -> str | None:
    """The caller's site after `require`; None for an operator (every site)."""
    return request.get(SITE)


def sees_site(request: web.Request, site: str | None) -> bool:
    own = request.get(SITE)
    return own is None or site == own


def require_site(request: web.Request, site: str | None, message: str = "no such resource") -> None:
    """After `require`: another site's resource is a 404, exactly like a missing one (give
    the message the handler answers for a missing one)."""
    if not sees_site(request, site):
        raise not_found(message)


def list_site(request: web.Request, given: str | None) -> str | None:
    """The site a list is limited to: the `?site=` given (an operator: None is every site);
    a site token's own site, and a 404 for any other site named."""
    own: str | None = request.get(SITE)
    if own is None:
        return given
    if given is not None and given != own:
        raise not_found("no such site")
    return own


def sees_course(request: web.Request, site: str, course: str) -> bool:
    scope = request.get(SCOPE)
    return sees_site(request, site) and (scope is None or (site, course) in scope)


def require_course(request: web.Request, site: str, course: str) -> None:
    """Teachers only in their courses (after `require`); another site's course is a 404."""
    require_site(request, site)
    if not sees_course(request, site, course):
        raise errors.ApiError(403, "not_your_course", f"course {site}/{course} is not yours")


async def check_tokens(db: database.Database) -> None:
    """At start: refuse to serve while admin, teacher or auditor tokens have no site."""
    unscoped = [t for t in await db.list_admin_tokens() if t.role != OPERATOR and t.site is None]
    if unscoped:
        ids = ", ".join(t.id for t in unscoped[:5]) + (", ..." if len(unscoped) > 5 else "")
        raise UnscopedTokens(
            f"{len(unscoped)} admin token(s) have no site ({ids}): give each one with"
            " `central token migrate --site SITE` or `--operator`, or revoke them"
        )
