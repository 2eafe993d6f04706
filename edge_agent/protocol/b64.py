"""base64url without padding (RFC 7515 §2), strict on decode."""

from __future__ import annotations

import base64
import binascii
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode(text: str | bytes) -> bytes:
    """Decode unpadded base64url; reject padding, foreign characters and impossible lengths."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ValueError("base64url text is not ASCII") from exc
    if not _ALPHABET.fullmatch(text):
        raise ValueError("base64url text has characters outside the alphabet")
    if len(text) % 4 == 1:
        raise ValueError("base64url text has an impossible length")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64url: {exc}") from exc
    if encode(data) != text:
        raise ValueError("base64url text is not canonical (non-zero trailing bits)")
    return data
