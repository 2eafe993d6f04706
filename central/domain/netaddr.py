"""IP addresses and networks parsed once and cached: pure (no I/O), so the check-in policy
and the HTTP layer share them."""

from __future__ import annotations

import functools
import ipaddress

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
