"""The device side of central's commands: verify, refuse replays, and say what happened.

Nonces of accepted commands are kept (until their command would have expired anyway) in the
state dir, so a command replayed after a restart is refused too.
"""

from __future__ import annotations

import json
import logging
import pathlib
import typing

from edge_agent.protocol import b64
from edge_agent.protocol import command

log = logging.getLogger(__name__)
NONCE_FILE = "command-nonces.json"
MAX_NONCES = 10_000


class Commands:
    def __init__(self, state_dir: pathlib.Path, site: str, device: str, central: bytes) -> None:
        self.path = state_dir / NONCE_FILE
        self.site = site
        self.device = device
        self.central = central
        self._seen: dict[str, int] = self._load()

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, int)}

    def _save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._seen))
        temporary.replace(self.path)

    def check(self, payload: bytes, now_ms: int) -> command.Command:
        """The command to apply, or CommandError (replays included, reason `replay`)."""
        found = command.verify(payload, self.central, self.site, self.device, now_ms)
        self._seen = {n: exp for n, exp in self._seen.items() if exp > now_ms}
        if found.nonce in self._seen:
            raise command.CommandError("replay", "this command was already applied")
        if len(self._seen) >= MAX_NONCES:
            raise command.CommandError("busy", "too many live commands")
        self._seen[found.nonce] = found.exp
        self._save()
        return found


def result(
    nonce: str | None, kind: str | None, outcome: str, reason: str = ""
) -> dict[str, typing.Any]:
    """What the device reports (a signed `protocol.report.CommandResult` on its telemetry
    topic) after each command it received."""
    return {
        "nonce": nonce,
        "kind": kind,
        "outcome": outcome,
        "reason": reason,
    }


def claimed_nonce(payload: bytes) -> str | None:
    """For the report of a refused command: the nonce it claims (unverified), if any."""
    try:
        parts = payload.decode("ascii").split(".")
        body = json.loads(b64.decode(parts[1]))
        nonce = body.get("nonce") if isinstance(body, dict) else None
    except (ValueError, IndexError, UnicodeDecodeError, RecursionError):
        return None
    return nonce[:64] if isinstance(nonce, str) else None
