"""The QR token: a deterministic per-slot Ed25519 signature, carried in a check-in URL."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse

from edge_agent.protocol import b64
from edge_agent.protocol import keys
from edge_agent.protocol import names

DOMAIN = "roomproof-qr/v1"
MAX_URL_CHARS = 2048
_PATH = re.compile(r"/c/([^/]+)/([^/]+)/([0-9]{1,15})\.([A-Za-z0-9_-]{86})")


class TokenError(ValueError):
    """Text that is not a well-formed check-in token."""


@dataclasses.dataclass(frozen=True)
class Token:
    site: str
    device: str
    slot: int
    signature: bytes

    @property
    def path(self) -> str:
        return f"/c/{self.site}/{self.device}/{self.slot}.{b64.encode(self.signature)}"


def message(site: str, device: str, room: str, slot: int) -> bytes:
    for kind, value in (("site", site), ("device", device), ("room", room)):
        names.validate(kind, value)
    if not isinstance(slot, int) or slot < 0:
        raise ValueError("slot must be a non-negative integer")
    return f"{DOMAIN}\n{site}\n{device}\n{room}\n{slot}".encode()


def sign(key: keys.SigningKey, site: str, device: str, room: str, slot: int) -> bytes:
    return key.sign(message(site, device, room, slot))


def verify(public: bytes, site: str, device: str, room: str, slot: int, signature: bytes) -> bool:
    try:
        signed = message(site, device, room, slot)
    except ValueError:
        return False
    return keys.verify(public, signed, signature)


def url(public_url: str, site: str, device: str, slot: int, signature: bytes) -> str:
    token = Token(site=site, device=device, slot=slot, signature=signature)
    return public_url.rstrip("/") + token.path


def parse(text: str) -> Token:
    """Accept the full URL or only its path; raise TokenError saying what is wrong."""
    if not isinstance(text, str) or not text:
        raise TokenError("token must be a non-empty string")
    if len(text) > MAX_URL_CHARS:
        raise TokenError(f"token is longer than {MAX_URL_CHARS} characters")
    try:
        path = urllib.parse.urlsplit(text).path if "://" in text else text
    except ValueError as exc:  # e.g. an unbalanced "[" in the host part
        raise TokenError(f"not a valid URL: {exc}") from exc
    match = _PATH.search(path)
    if match is None or not path.endswith(match.group(0)):
        raise TokenError("not a roomproof check-in link (expected .../c/SITE/DEVICE/SLOT.SIG)")
    site, device, slot_text, sig_text = match.groups()
    if not names.is_valid(site) or not names.is_valid(device):
        raise TokenError("check-in link names an invalid site or device")
    try:
        signature = b64.decode(sig_text)
    except ValueError as exc:
        raise TokenError(f"check-in link signature is not base64url: {exc}") from exc
    return Token(site=site, device=device, slot=int(slot_text), signature=signature)
