"""Is the device in its room? A verdict per proof from its `env` against the room's profile.

- GPS: haversine distance minus the fix's accuracy, against the room's radius.
- WiFi: overlap of the strongest BSSIDs heard with the room's learned set.
- BLE: the room's installed beacons heard above a threshold.
`mismatch` when any signal contradicts the room, `verified` when one confirms it and none
contradicts, `weak` when nothing can tell (no profile yet, too few signals).
"""

from __future__ import annotations

import dataclasses
import math
import typing

STRONGEST_WIFI = 8  # radios differ in calibration: compare the strongest APs, not a dBm level
BLE_HEARD_DBM = -95
WIFI_VERIFIED_OVERLAP = 0.5
WIFI_MIN_FOR_MISMATCH = 3
EARTH_RADIUS_M = 6_371_008.8


@dataclasses.dataclass(frozen=True)
class Profile:
    """What a room looks like; `state` is learning, ready (learned, awaiting an admin) or
    confirmed. Only a confirmed profile's WiFi/BLE sets judge proofs."""

    site: str
    room: str
    state: str
    wifi: frozenset[str]
    ble: frozenset[str]
    learn_target: int
    learned: int
    counts: dict[str, int]  # "wifi:BSSID" / "ble:ID" -> proofs that saw it, while learning


@dataclasses.dataclass(frozen=True)
class Verdict:
    verdict: str  # verified | weak | mismatch
    reasons: list[str]


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = math.radians(lat2 - lat1), math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def strong_wifi(env: dict[str, typing.Any]) -> set[str]:
    heard = sorted(env.get("wifi", []), key=lambda ap: ap.get("rssi", -127), reverse=True)
    return {ap["bssid"] for ap in heard[:STRONGEST_WIFI]}


def heard_ble(env: dict[str, typing.Any]) -> set[str]:
    return {
        f"{b['kind']}:{b['id']}" for b in env.get("ble", []) if b.get("rssi", -127) >= BLE_HEARD_DBM
    }


def judge(
    env: dict[str, typing.Any],
    lat: float | None,
    lon: float | None,
    radius_m: float,
    profile: Profile | None,
) -> Verdict:
    confirms: list[str] = []
    contradicts: list[str] = []
    gps = env.get("gps")
    if lat is not None and lon is not None and gps:
        away = distance_m(lat, lon, gps["lat"], gps["lon"]) - (gps.get("accuracy_m") or 0)
        if away <= radius_m:
            confirms.append(f"gps within {radius_m:.0f} m of the room")
        else:
            contradicts.append(f"gps {away:.0f} m outside the room's {radius_m:.0f} m radius")
    if profile is not None and profile.state == "confirmed":
        heard = strong_wifi(env)
        if profile.wifi and heard:
            overlap = len(heard & profile.wifi) / min(len(heard), len(profile.wifi))
            if overlap >= WIFI_VERIFIED_OVERLAP:
                confirms.append(f"wifi overlap {overlap:.0%} with the room's access points")
            elif overlap == 0 and len(heard) >= WIFI_MIN_FOR_MISMATCH:
                contradicts.append(f"none of {len(heard)} strong access points belongs to the room")
        beacons = heard_ble(env)
        if profile.ble:
            found = beacons & profile.ble
            if found:
                confirms.append(f"{len(found)} of the room's {len(profile.ble)} beacons heard")
    elif profile is not None:
        confirms_note = f"room profile {profile.state} ({profile.learned}/{profile.learn_target})"
        if not confirms and not contradicts:
            return Verdict("weak", [confirms_note])
    if contradicts:
        return Verdict("mismatch", contradicts + confirms)
    if confirms:
        return Verdict("verified", confirms)
    missing = env.get("missing") or {}
    reason = "no signal to compare" + (
        f" (missing: {', '.join(sorted(missing))})" if missing else ""
    )
    return Verdict("weak", [reason])


def learn(profile: Profile, env: dict[str, typing.Any]) -> Profile:
    """Count what this proof saw; after `learn_target` proofs the profile is ready to confirm,
    holding what at least half of them saw."""
    if profile.state != "learning":
        return profile
    counts = dict(profile.counts)
    for bssid in strong_wifi(env):
        counts[f"wifi:{bssid}"] = counts.get(f"wifi:{bssid}", 0) + 1
    for beacon in heard_ble(env):
        counts[f"ble:{beacon}"] = counts.get(f"ble:{beacon}", 0) + 1
    learned = profile.learned + 1
    if learned < profile.learn_target:
        return dataclasses.replace(profile, counts=counts, learned=learned)
    keep = {key for key, seen in counts.items() if seen * 2 >= learned}
    return dataclasses.replace(
        profile,
        state="ready",
        learned=learned,
        counts=counts,
        wifi=frozenset(k[5:] for k in keep if k.startswith("wifi:")),
        ble=frozenset(k[4:] for k in keep if k.startswith("ble:")),
    )
