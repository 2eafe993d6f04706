"""The device side of enrollment: one request made with the bundle's code, kept until answered.

The request (with its HMAC) is stored in the state dir and the code erased from the bundle at
once, so a restart re-sends the same request and the code never lives longer than needed.
A re-enrollment (`restart`) replaces the record with a new request the same way; the room the
device is bound to is the one of its last request (central may move it), not the bundle's.
"""

from __future__ import annotations

import datetime
import json
import logging
import pathlib
import typing

from edge_agent import bundle as bundle_mod
from edge_agent import keystore
from edge_agent import tomlsettings
from edge_agent.protocol import b64
from edge_agent.protocol import enroll
from edge_agent.protocol import names

log = logging.getLogger(__name__)


class Enrollment:
    def __init__(
        self,
        state_dir: pathlib.Path,
        bundle_path: pathlib.Path,
        b: bundle_mod.Bundle,
        device_keys: keystore.DeviceKeys,
    ) -> None:
        self.record_path = state_dir / "enrollment.json"
        self.request_path = state_dir / "enroll-request.json"
        self.bundle = b
        self.rejected: str | None = None
        self.request = b""
        self.nonce = ""
        if self.enrolled:
            return
        if not self.request_path.exists():
            if not b.enrollment_code:
                raise tomlsettings.ConfigError(
                    f"{bundle_path}: enrollment_code: required setting is missing"
                    " (this device is not enrolled yet; create a new bundle with"
                    " `python -m central device add`)"
                )
            expires = b.enrollment_expires
            if (
                expires is not None
                and expires.tzinfo
                and expires < datetime.datetime.now(datetime.UTC)
            ):
                raise tomlsettings.ConfigError(
                    f"{bundle_path}: enrollment_expires: the enrollment code expired at"
                    f" {expires.isoformat()}; create a new bundle with"
                    " `python -m central device add`"
                )
            request = enroll.sign_request(
                b.enrollment_code,
                b.site,
                b.room,
                b.device,
                device_keys.signing,
                device_keys.agreement.public,
            )
            _write_atomic(self.request_path, request)
        if b.enrollment_code and not bundle_mod.erase_code(bundle_path):
            log.warning("could not erase the enrollment code from %s (read-only?)", bundle_path)
        self.request = self.request_path.read_bytes()
        self.nonce = _fields(self.request).nonce

    @property
    def enrolled(self) -> bool:
        return self.record_path.exists()

    @property
    def room(self) -> str:
        """The room this device is (being) bound to."""
        room: object = None
        try:
            if self.request_path.exists():
                room = _fields(self.request_path.read_bytes()).room
            else:
                room = json.loads(self.record_path.read_bytes()).get("room")
        except (OSError, ValueError, AttributeError):
            room = None
        return room if isinstance(room, str) and names.is_valid(room) else self.bundle.room

    def restart(self, request: bytes) -> None:
        """Enroll again with `request` (new keys, made with a code from central's `re_enroll`
        command). Idempotent, so a start that finds the change staged can simply repeat it."""
        _write_atomic(self.request_path, request)
        self.record_path.unlink(missing_ok=True)
        self.request = request
        self.nonce = _fields(request).nonce
        self.rejected = None

    def handle_reply(self, payload: bytes) -> bool:
        """Check central's signed answer; True once enrolled."""
        try:
            reply = enroll.verify_reply(payload, b64.decode(self.bundle.central_ed25519))
        except enroll.EnrollError as exc:
            log.warning("ignored a command that is not genuine: %s", exc)
            return False
        if reply.get("site") != self.bundle.site or reply.get("device") != self.bundle.device:
            log.warning("ignored a reply meant for another device")
            return False
        if reply.get("nonce") != self.nonce:
            log.warning("ignored a reply to another enrollment request")
            return False
        if reply["type"] == "enroll_rejected":
            self.rejected = str(reply.get("reason", "unknown reason"))[:200]
            log.error("central rejected enrollment: %s", self.rejected)
            return False
        if reply["type"] != "enrolled":
            return False
        room = _fields(self.request).room
        record: dict[str, typing.Any] = {
            "iat": reply.get("iat"),
            "room": room,
            "config": reply.get("config", {}),
        }
        _write_atomic(self.record_path, json.dumps(record).encode())
        self.request_path.unlink(missing_ok=True)
        log.info("enrolled with central as %s/%s", self.bundle.site, self.bundle.device)
        return True


def _fields(request: bytes) -> enroll.Request:
    """The members of our own stored request: signed (a JWS) or bare JSON (written by an
    agent older than signed requests, before an upgrade)."""
    return enroll.parse_request(request)


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    temporary.chmod(0o600)
    temporary.replace(path)
