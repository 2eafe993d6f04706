"""One-time codes: RFC 4226 HOTP / RFC 6238 TOTP, keyed by an X25519-derived secret.

Written here rather than imported because the RFC vectors pin it down completely and both
sides must derive the key the same way (HKDF over the X25519 shared secret). HKDF (RFC 5869) is
two HMACs, done with the standard library: `cryptography` would cost the Pi agent ~8 MiB of RSS.
"""

from __future__ import annotations

import hashlib
import hmac
import math

from edge_agent.protocol import keys

INFO = b"roomproof/v1/totp"
DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


def hotp(key: bytes, counter: int, digits: int = 6, digest: str = "sha1") -> str:
    if digest not in DIGESTS:
        raise ValueError(f"unsupported TOTP digest {digest!r}")
    if not 6 <= digits <= 10:
        raise ValueError("digits must be between 6 and 10")
    if counter < 0:
        raise ValueError("counter must be non-negative")
    mac = hmac.new(key, counter.to_bytes(8, "big"), DIGESTS[digest]).digest()
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def counter_at(unix_s: float, step_s: int = 30, t0: int = 0) -> int:
    return math.floor((unix_s - t0) / step_s)


def totp(
    key: bytes, unix_s: float, step_s: int = 30, digits: int = 6, digest: str = "sha1", t0: int = 0
) -> str:
    return hotp(key, counter_at(unix_s, step_s, t0), digits, digest)


def matches(
    key: bytes,
    code: str,
    unix_s: float,
    step_s: int = 30,
    window: int = 1,
    digest: str = "sha1",
    digits: int = 6,
) -> int | None:
    """The counter whose code equals `code` within +-window steps, else None (constant time)."""
    if not isinstance(code, str) or len(code) != digits or not code.isascii() or not code.isdigit():
        return None
    now = counter_at(unix_s, step_s)
    found: int | None = None
    for counter in range(now - window, now + window + 1):
        if counter >= 0 and hmac.compare_digest(hotp(key, counter, digits, digest), code):
            found = counter
    return found


def derive_key(own: keys.AgreementKey, peer_public: bytes, site: str, device: str) -> bytes:
    """The TOTP key both sides compute on their own; it never crosses the network."""
    return hkdf_sha256(own.shared(peer_public), f"{site}|{device}".encode(), INFO, 32)


def hkdf_sha256(secret: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 extract-then-expand with HMAC-SHA256 (empty salt means 32 zero bytes)."""
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF-SHA256 length must be 1..8160 bytes")
    prk = hmac.digest(salt or bytes(32), secret, "sha256")
    block = b""
    out = b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        out += block
    return out[:length]
