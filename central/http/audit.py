"""The audit log of admin actions: who (the token's role and id, or the CLI's user), what,
on which target, in which site, when. Written after the action succeeded; read at
GET /api/v1/audit (a site token reads only its site's entries)."""

from __future__ import annotations

import getpass
import time

from aiohttp import web

from central.http import auth
from central.storage import database


async def api(
    request: web.Request,
    db: database.Database,
    action: str,
    target: str,
    detail: str = "",
    site: str | None = None,
) -> None:
    """`site`: the site acted in (default: the token's; an operator's action names it)."""
    actor = request.get(auth.ACTOR, "unknown")
    where = site if site is not None else auth.site_of(request)
    await db.audit(actor, action, target, detail, int(time.time() * 1000), where)


async def cli(
    db: database.Database, action: str, target: str, detail: str = "", site: str | None = None
) -> None:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = "unknown"
    await db.audit(f"cli:{user}", action, target, detail, int(time.time() * 1000), site)
