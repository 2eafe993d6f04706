"""Check-in policy: the evidence recorded with every check-in and the flags it raises.

Evidence is never a silent reject: a check-in with a genuine, fresh token is recorded, and
what is doubtful about it is written down as flags with reasons (status `flagged`) for a
teacher to decide. Phone location is taken only with explicit consent and kept as a distance
band, never as coordinates.
"""

from __future__ import annotations

import dataclasses
import typing

from central.domain import environment
from central.domain import netaddr

GEO_BANDS = (("in_room", 0.0), ("near", 200.0), ("on_campus", 1000.0))  # then "far"
NO_BROWSER_ID = "no_browser_id: the browser sent no browser id (a relay or a shared phone?)"


class PolicyError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class Geo:
    lat: float
    lon: float
    accuracy_m: float

    @classmethod
    def parse(cls, data: typing.Any) -> Geo:
        """`{"lat", "lon", "accuracy_m", "consent": true}`; anything else is refused."""
        if not isinstance(data, dict) or set(data) - {"lat", "lon", "accuracy_m", "consent"}:
            raise PolicyError("geo", "geo must be {lat, lon, accuracy_m, consent}")
        if data.get("consent") is not True:
            raise PolicyError("geo", "location is only taken with consent: true")
        values = [data.get(key) for key in ("lat", "lon", "accuracy_m")]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise PolicyError("geo", "lat, lon and accuracy_m must be numbers")
        try:
            lat, lon, accuracy = (float(v) for v in values)  # type: ignore[arg-type]
        except OverflowError as exc:  # a JSON integer beyond any float
            raise PolicyError("geo", "lat, lon or accuracy_m out of range") from exc
        if not (-90 <= lat <= 90 and -180 <= lon <= 180 and 0 <= accuracy <= 100_000):
            raise PolicyError("geo", "lat, lon or accuracy_m out of range")
        return cls(lat, lon, accuracy)


def geo_band(geo: Geo, lat: float | None, lon: float | None, radius_m: float) -> str:
    if lat is None or lon is None:
        return "unknown"
    away = environment.distance_m(lat, lon, geo.lat, geo.lon) - geo.accuracy_m - radius_m
    for band, limit in GEO_BANDS:
        if away <= limit:
            return band
    return "far"


def network_of(client_ip: str, networks: dict[str, list[str]]) -> str:
    """The building whose subnet holds the client, "off_campus", or "unknown"."""
    if not networks:
        return "unknown"
    address = netaddr.address(client_ip)
    if address is None:
        return "unknown"
    for building, subnets in sorted(networks.items()):
        if any(address in netaddr.network(subnet) for subnet in subnets):
            return f"campus:{building}"
    return "off_campus"


@dataclasses.dataclass(frozen=True)
class Facts:
    token_slot: int
    token_age_ms: int
    method: str
    device_verdict: str | None
    verdict_reasons: tuple[str, ...]
    verdict_of_slot: bool  # False: no proof of that slot yet; the device's last verdict is used
    network: str
    browser_students: int  # other students this browser checked in for the same session/room
    # The request carried a browser id (the roomproof_browser cookie, set by the check-in
    # page): without one, a relay or a shared phone checking in several students is invisible.
    browser_id: bool
    geo_band: str | None
    on_roster: bool | None  # None: no session running


@dataclasses.dataclass(frozen=True)
class Rules:
    require_verified: bool
    flag_off_campus: bool


def judge(facts: Facts, rules: Rules) -> tuple[dict[str, typing.Any], list[str]]:
    """(evidence, flags)."""
    flags: list[str] = []
    if facts.device_verdict == "mismatch":
        flags.append("room device reports it is not in its room")
    elif rules.require_verified and facts.device_verdict != "verified":
        flags.append(f"room device not verified in its room ({facts.device_verdict or 'none'})")
    if rules.flag_off_campus and facts.network == "off_campus":
        flags.append("client network is not a campus network")
    if facts.browser_students > 0:
        flags.append(f"this browser also checked in {facts.browser_students} other student(s)")
    if not facts.browser_id:
        flags.append(NO_BROWSER_ID)
    if facts.geo_band == "far":
        flags.append("phone location is far from the room")
    if facts.on_roster is False:
        flags.append("student is not on the course roster")
    evidence = {
        "token_slot": facts.token_slot,
        "token_age_ms": facts.token_age_ms,
        "method": facts.method,
        "device_verdict": facts.device_verdict,
        "verdict_reasons": list(facts.verdict_reasons),
        "verdict_of_slot": facts.verdict_of_slot,
        "network": facts.network,
        "browser_students": facts.browser_students,
        "no_browser_id": not facts.browser_id,
        "geo_band": facts.geo_band,
        "on_roster": facts.on_roster,
    }
    return evidence, flags
