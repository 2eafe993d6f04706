"""The proof hash chain: each proof names the SHA-256 of its predecessor's compact JWS."""

from __future__ import annotations

import hashlib

GENESIS = "0" * 64


def link(compact: str | bytes) -> str:
    data = compact.encode("ascii") if isinstance(compact, str) else compact
    return hashlib.sha256(data).hexdigest()
