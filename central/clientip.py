"""The client's address as central should see it: behind a reverse proxy, the address the
proxy reports in X-Forwarded-For, but only when the request really comes from a proxy we
trust (anyone can send that header)."""

from __future__ import annotations

import ipaddress

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: list[str]) -> list[Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def _trusted(address: str, trusted: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_ip(request: web.Request, trusted: list[Network]) -> str:
    """The rightmost X-Forwarded-For hop that is not one of our proxies."""
    remote = request.remote or "unknown"
    if not trusted or not _trusted(remote, trusted):
        return remote
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return remote
    return remote
