"""The client's address as central should see it: behind a reverse proxy, the address the
proxy reports in X-Forwarded-For, but only when the request really comes from a proxy we
trust (anyone can send that header)."""

from __future__ import annotations

from aiohttp import web

from central.domain import netaddr


def _trusted(text: str, trusted: list[netaddr.Network]) -> bool:
    ip = netaddr.address(text)
    return ip is not None and any(ip in net for net in trusted)


def client_ip(request: web.Request, trusted: list[netaddr.Network]) -> str:
    """The rightmost X-Forwarded-For hop that is not one of our proxies."""
    remote = request.remote or "unknown"
    if not trusted or not _trusted(remote, trusted):
        return remote
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            ip = netaddr.address(hop)
            return remote if ip is None else str(ip)
    return remote
