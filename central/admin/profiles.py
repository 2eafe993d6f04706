"""Admin actions on room profiles, shared by the API and the CLI."""

from __future__ import annotations

import dataclasses
import re
import time

from central.domain import environment
from central.storage import database


class ProfileError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


BSSID = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
BEACON = re.compile(r"[a-z0-9-]{1,32}:[A-Za-z0-9:._/-]{1,128}")
MAX_ENTRIES = 256


def check_sets(wifi: list[str] | None, ble: list[str] | None) -> None:
    """An admin's own sets: BSSIDs as aa:bb:cc:dd:ee:ff, beacons as KIND:ID (as listed)."""
    for label, values, pattern in (("wifi", wifi, BSSID), ("ble", ble, BEACON)):
        if values is None:
            continue
        if len(values) > MAX_ENTRIES:
            raise ProfileError(400, "invalid_request", f"{label}: at most {MAX_ENTRIES} entries")
        bad = [v for v in values if not isinstance(v, str) or not pattern.fullmatch(v)]
        if bad:
            raise ProfileError(400, "invalid_request", f"{label}: not valid: {str(bad[0])[:80]}")


async def apply(
    db: database.Database,
    site: str,
    room: str,
    action: str,
    learn_proofs: int,
    wifi: list[str] | None = None,
    ble: list[str] | None = None,
) -> environment.Profile:
    """`confirm` a learned profile (optionally as edited by the admin: `wifi`/`ble` replace
    the learned sets, and then no learning is needed), or `relearn` from the next proofs."""
    if await db.get_room(site, room) is None:
        raise ProfileError(404, "not_found", f"room {site}/{room} does not exist")
    check_sets(wifi, ble)
    profile = await db.get_profile(site, room)
    now = int(time.time() * 1000)
    if action == "confirm" and (wifi is not None or ble is not None):
        base = profile or environment.Profile(
            site, room, "learning", frozenset(), frozenset(), learn_proofs, 0, {}
        )
        edited = dataclasses.replace(
            base,
            state="confirmed",
            wifi=frozenset(wifi) if wifi is not None else base.wifi,
            ble=frozenset(ble) if ble is not None else base.ble,
        )
        await db.save_profile(edited, now)
        return edited
    if action == "relearn":
        fresh = environment.Profile(
            site, room, "learning", frozenset(), frozenset(), learn_proofs, 0, {}
        )
        await db.save_profile(fresh, now)
        return fresh
    if profile is None or profile.state == "learning":
        learned = 0 if profile is None else profile.learned
        target = learn_proofs if profile is None else profile.learn_target
        raise ProfileError(
            409,
            "profile_not_ready",
            f"room {site}/{room} is still learning ({learned}/{target} proofs)",
        )
    confirmed = dataclasses.replace(profile, state="confirmed")
    await db.save_profile(confirmed, now)
    return confirmed
