"""Admin actions on room profiles, shared by the API and the CLI."""

from __future__ import annotations

import dataclasses
import time

from central import environment
from central import store


class ProfileError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


async def apply(
    db: store.Store, site: str, room: str, action: str, learn_proofs: int
) -> environment.Profile:
    """`confirm` a learned profile, or `relearn` the room from its next proofs."""
    if await db.get_room(site, room) is None:
        raise ProfileError(404, "not_found", f"room {site}/{room} does not exist")
    profile = await db.get_profile(site, room)
    now = int(time.time() * 1000)
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
