"""Where the agent's time comes from, and whether to trust it enough to show tokens.

`ntp`: the kernel says an NTP client disciplines the clock (adjtimex, as chrony, ntpd and
systemd-timesyncd all use); `gps`: a fresh GPS fix's time agrees with the system clock;
`none`: neither, and the room screen waits rather than show tokens from a wrong clock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import datetime
import time

from edge_agent.sensors import sighting

TIME_ERROR = 5
STA_UNSYNC = 0x0040
GPS_AGREEMENT_MS = 2000
GPS_FRESH_S = 10.0


class _Timex(ctypes.Structure):
    _fields_ = [  # struct timex up to status, then room for the rest
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("rest", ctypes.c_char * 256),
    ]


@dataclasses.dataclass(frozen=True)
class TimeStatus:
    source: str  # "gps", "ntp" or "none"
    uncertainty_ms: int

    @property
    def trusted(self) -> bool:
        return self.source != "none"

    def claim(self) -> dict[str, object]:
        return {"source": self.source, "uncertainty_ms": self.uncertainty_ms}


def kernel_clock() -> TimeStatus:
    """NTP-synchronised or not, with the kernel's estimated error."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return TimeStatus("none", 60_000)
    if state == TIME_ERROR or timex.status & STA_UNSYNC or state < 0:
        return TimeStatus("none", min(86_400_000, max(0, timex.maxerror // 1000)))
    return TimeStatus("ntp", max(1, timex.esterror // 1000))


def gps_clock(fix: sighting.Sighting | None, now_wall: float, now_mono: float) -> TimeStatus | None:
    """GPS time, if a fresh fix's time agrees with the system clock."""
    if fix is None or now_mono - fix.at > GPS_FRESH_S or not fix.fields.get("time"):
        return None
    moment = datetime.datetime.fromisoformat(str(fix.fields["time"]).replace("Z", "+00:00"))
    received_wall = now_wall - (now_mono - fix.at)
    offset_ms = abs(moment.timestamp() - received_wall) * 1000
    if offset_ms > GPS_AGREEMENT_MS:
        return None
    return TimeStatus("gps", int(offset_ms) + 100)


def current(last_gps: sighting.Sighting | None) -> TimeStatus:
    kernel = kernel_clock()
    if kernel.trusted:
        return kernel
    return gps_clock(last_gps, time.time(), time.monotonic()) or kernel
