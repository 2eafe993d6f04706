"""The client's address as central should see it: behind a reverse proxy, the address the
proxy reports in X-Forwarded-For, but only when the request really comes from a proxy we
trust (anyone can send that header)."""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=65536)
def address(text: str) -> Address | None:
    """Parsed once per distinct address (ipaddress parsing costs more than a check-in's
    database work); None when `text` is not an IP address."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=1024)
def network(cidr: str) -> Network:
    return ipaddress.ip_network(cidr, strict=False)


def networks(cidrs: list[str]) -> list[Network]:
    return [network(cidr) for cidr in cidrs]


def _trusted(text: str, trusted: list[Network]) -> bool:
    ip = address(text)
    return ip is not None and any(ip in net for net in trusted)


def client_ip(request: web.Request, trusted: list[Network]) -> str:
    """The rightmost X-Forwarded-For hop that is not one of our proxies."""
    remote = request.remote or "unknown"
    if not trusted or not _trusted(remote, trusted):
        return remote
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            ip = address(hop)
            return remote if ip is None else str(ip)
    return remote
