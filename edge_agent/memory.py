"""glibc malloc tuning for a long-running agent on a 512 MB-1 GB Pi.

Each frame allocates and frees several megabytes; glibc keeps freed heap memory and gives
each worker thread its own arena, so RSS climbs to twice what is in use. Large blocks from
mmap go back to the kernel when freed, and two arenas are plenty for this agent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3


def tune_malloc(mmap_threshold: int = 128 * 1024, arenas: int = 2) -> bool:
    """True when applied (glibc); elsewhere (musl, macOS) nothing to do."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_ARENA_MAX, arenas))
    if not ok:
        log.debug("mallopt refused the settings")
    return ok
