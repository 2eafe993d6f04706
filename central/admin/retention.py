"""Retention: once an hour, detail that is no longer needed is purged (DESIGN: privacy).

After `retention_days`, a check-in keeps its status, flags and verdict but loses the client
network and browser evidence; a proof keeps its seq, hash, slot and verdict but loses its JWS
(the room's raw WiFi/BLE/GPS observations), unless a check-in's evidence bundle needs it.
"""

from __future__ import annotations

import asyncio
import logging

from central.core import clock as clock_mod
from central.core import settings as settings_mod
from central.storage import database

log = logging.getLogger(__name__)
EVERY_S = 3600.0


async def purge_once(
    db: database.Database, settings: settings_mod.CentralSettings, clock: clock_mod.Clock
) -> dict[str, int]:
    before = clock.now_ms() - int(settings.retention_days * 86400_000)
    purged = await db.purge_before(before)
    if any(purged.values()):
        log.info(
            "retention (%g days): purged details of %d check-ins and %d proofs",
            settings.retention_days,
            purged["checkins"],
            purged["proofs"],
        )
    return purged


async def run(
    db: database.Database, settings: settings_mod.CentralSettings, clock: clock_mod.Clock
) -> None:
    while True:
        try:
            await purge_once(db, settings, clock)
        except Exception:  # the store may be down for a while: try again next hour
            log.exception("retention purge failed; retrying in an hour")
        await asyncio.sleep(EVERY_S)
