"""Central -> device commands on `roomproof/v1/{site}/{device}/cmd`, signed by central.

A command is a compact JWS (EdDSA, kid `central`, typ `roomproof-command+jws`) over
`{"v": 1, "type": "command", "site", "device", "kind", "args", "nonce", "iat", "exp"}`.
The device accepts it only with central's signature, for itself, not expired (and not dated
more than CLOCK_SKEW_MS ahead), and with a nonce it has not seen; it reports the outcome.
Kinds: `show_message` {text, seconds}, `status_report` {}, `set_timing` {slot_s, otp_step_s}
(QR rotation period 5..300 s and one-time code step 10..300 s; either or both),
`rotate_keys` {} (new keys, announced in a key change, see `keychange`), `re_enroll`
{code, room?} (`code`: a fresh one-time enrollment code sealed to the device's X25519 key, so
it never crosses the broker in clear; `room`: where the device is bound next, default its own).
"""

from __future__ import annotations

import dataclasses
import json
import typing

import nacl.exceptions
import nacl.public

from edge_agent.protocol import b64
from edge_agent.protocol import jws
from edge_agent.protocol import keys
from edge_agent.protocol import names

TYP = "roomproof-command+jws"
KID = "central"
MAX_BYTES = 4096
MAX_LIFETIME_MS = 24 * 3600 * 1000
CLOCK_SKEW_MS = 5 * 60 * 1000
KINDS = frozenset({"show_message", "status_report", "set_timing", "rotate_keys", "re_enroll"})
MAX_MESSAGE = 200
CODE_BYTES = 32
SEALED_BYTES = CODE_BYTES + 48  # a libsodium sealed box adds an ephemeral key and a MAC


class CommandError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Command:
    kind: str
    args: dict[str, typing.Any]
    nonce: str
    iat: int
    exp: int


def check_args(kind: str, args: object) -> dict[str, typing.Any]:
    if kind not in KINDS:
        raise CommandError("unknown_kind", f"unknown command {kind!r}")
    if not isinstance(args, dict):
        raise CommandError("bad_args", "args must be an object")
    if kind == "show_message":
        text, seconds = args.get("text"), args.get("seconds", 60)
        if set(args) - {"text", "seconds"}:
            raise CommandError("bad_args", "show_message takes text and seconds")
        if not isinstance(text, str) or not 0 < len(text) <= MAX_MESSAGE or not text.isprintable():
            raise CommandError("bad_args", f"text: 1..{MAX_MESSAGE} printable characters")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= 86400:
            raise CommandError("bad_args", "seconds: 1..86400")
        return {"text": text, "seconds": seconds}
    if kind == "set_timing":
        ranges = {"slot_s": (5, 300), "otp_step_s": (10, 300)}
        if not args or set(args) - set(ranges):
            raise CommandError("bad_args", "set_timing takes slot_s and/or otp_step_s")
        for key, value in args.items():
            low, high = ranges[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise CommandError("bad_args", f"{key}: {low}..{high}")
        return dict(args)
    if kind == "re_enroll":
        if set(args) - {"code", "room"} or "code" not in args:
            raise CommandError("bad_args", "re_enroll takes code and optionally room")
        code, room = args["code"], args.get("room")
        try:
            sealed = b64.decode(code) if isinstance(code, str) else b""
        except ValueError:
            sealed = b""
        if len(sealed) != SEALED_BYTES:
            raise CommandError("bad_args", f"code: a base64url sealed box of {SEALED_BYTES} bytes")
        if room is not None and not (isinstance(room, str) and names.is_valid(room)):
            raise CommandError("bad_args", "room: a room name")
        return {"code": code} if room is None else {"code": code, "room": room}
    if args:
        raise CommandError("bad_args", f"{kind} takes no arguments")
    return {}


def sign(
    key: keys.SigningKey,
    site: str,
    device: str,
    kind: str,
    args: dict[str, typing.Any],
    nonce: str,
    iat: int,
    exp: int,
) -> str:
    checked = check_args(kind, args)
    if not 0 < exp - iat <= MAX_LIFETIME_MS:
        raise CommandError("bad_expiry", "a command lives between 1 ms and 24 h")
    body = {
        "v": 1,
        "type": "command",
        "site": site,
        "device": device,
        "kind": kind,
        "args": checked,
        "nonce": nonce,
        "iat": iat,
        "exp": exp,
    }
    return jws.sign(json.dumps(body, separators=(",", ":")).encode(), key, kid=KID, typ=TYP)


def is_command(payload: bytes) -> bool:
    """Whether a `cmd` message claims to be a command (rather than an enrollment reply)."""
    try:
        parsed = jws.parse(payload, MAX_BYTES)
    except jws.JWSError:
        return False
    return parsed.header.get("typ") == TYP


def verify(payload: bytes, central_public: bytes, site: str, device: str, now_ms: int) -> Command:
    """The command, or CommandError(reason): malformed, bad_signature, wrong_device,
    expired, not_yet_valid, unknown_kind, bad_args. Replays are the caller's (nonce) check."""
    try:
        parsed = jws.parse(payload, MAX_BYTES)
    except jws.JWSError as exc:
        raise CommandError("malformed", f"not a JWS: {exc}") from exc
    if parsed.header.get("typ") != TYP or parsed.kid != KID:
        raise CommandError("malformed", "wrong JWS header")
    if not jws.verify(parsed, central_public):
        raise CommandError("bad_signature", "not signed by central")
    try:
        data = json.loads(parsed.payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CommandError("malformed", "payload is not JSON") from exc
    fields = ("site", "device", "kind", "nonce", "iat", "exp")
    if not isinstance(data, dict) or data.get("v") != 1 or data.get("type") != "command":
        raise CommandError("malformed", "not a command")
    if not all(k in data for k in fields) or not isinstance(data["nonce"], str):
        raise CommandError("malformed", "a command field is missing")
    if (data["site"], data["device"]) != (site, device):
        raise CommandError("wrong_device", "the command is for another device")
    iat, exp = data["iat"], data["exp"]
    if not isinstance(iat, int) or not isinstance(exp, int) or not 0 < exp - iat <= MAX_LIFETIME_MS:
        raise CommandError("malformed", "iat/exp are not a valid lifetime")
    if exp <= now_ms:
        raise CommandError("expired", "the command has expired")
    if iat > now_ms + CLOCK_SKEW_MS:
        raise CommandError("not_yet_valid", "the command is dated in the future")
    if not 8 <= len(data["nonce"]) <= 64:
        raise CommandError("malformed", "bad nonce")
    args = check_args(str(data["kind"]), data.get("args", {}))
    return Command(str(data["kind"]), args, data["nonce"], iat, exp)


def seal_code(device_x25519: bytes, code: str) -> str:
    """The `re_enroll` code (base64url of 32 bytes, as in a bundle) sealed to the device's
    X25519 public key: only that device can open it."""
    raw = b64.decode(code)
    if len(raw) != CODE_BYTES:
        raise ValueError(f"an enrollment code is {CODE_BYTES} bytes")
    box = nacl.public.SealedBox(nacl.public.PublicKey(device_x25519))
    return b64.encode(bytes(box.encrypt(raw)))


def open_code(agreement: keys.AgreementKey, sealed: str) -> str:
    """The enrollment code from `seal_code`; CommandError(`bad_code`) if it is not for us."""
    try:
        box = nacl.public.SealedBox(nacl.public.PrivateKey(agreement.private))
        raw = box.decrypt(b64.decode(sealed))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise CommandError("bad_code", "the enrollment code is not sealed to this device") from exc
    if len(raw) != CODE_BYTES:
        raise CommandError("bad_code", f"an enrollment code is {CODE_BYTES} bytes")
    return b64.encode(raw)
