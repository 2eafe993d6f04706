"""Central -> device commands: sign one (arming a re-enrollment first when asked for one), and,
for the CLI, which has no bridge, publish it and wait for the device's result.

A `re_enroll` command's code is made here, stored as the device's one-time enrollment code and
sent only sealed to the device's X25519 key: the admin never sees it, the broker never
carries it in clear.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import typing
import uuid

import aiomqtt

from central.core import keyring
from central.core import settings as settings_mod
from central.ingest import enrollment
from central.storage import database
from edge_agent.protocol import command
from edge_agent.protocol import jws
from edge_agent.protocol import names
from edge_agent.protocol import report
from edge_agent.protocol import topics


async def prepare(
    db: database.Database,
    keys: keyring.Keyring,
    now_ms: int,
    site: str,
    device: str,
    kind: str,
    args: dict[str, typing.Any],
    ttl_s: int,
) -> tuple[str, dict[str, typing.Any]]:
    """The signed command and its record (as `GET .../commands` lists it); CommandError on a
    bad kind or bad args."""
    nonce = secrets.token_hex(12)
    expires = now_ms + ttl_s * 1000
    shown = args
    if kind == "re_enroll":
        if not isinstance(args, dict) or set(args) - {"room"}:
            raise command.CommandError(
                "bad_args", "re_enroll takes only room (central makes the code)"
            )
        room = args.get("room")
        if room is not None and not (isinstance(room, str) and names.is_valid(room)):
            raise command.CommandError("bad_args", "room: a room name")
        args = await enrollment.prepare_reenroll(db, site, device, room, expires)
        shown = {"room": args["room"]}
    signed = command.sign(keys.signing, site, device, kind, args, nonce, now_ms, expires)
    sent = {
        "nonce": nonce,
        "kind": kind,
        "args": shown,
        "sent_at": now_ms,
        "expires_at": expires,
        "outcome": "sent",
        "reason": "",
    }
    return signed, sent


async def publish(
    settings: settings_mod.CentralSettings,
    site: str,
    device: str,
    signed: str,
    nonce: str,
    wait_s: float,
    device_public: bytes,
) -> dict[str, typing.Any] | None:
    """Publish on the device's `cmd` topic (QoS 1) with a client of its own; then, for up to
    `wait_s`, watch the device's telemetry for the command's result (None if none came): only
    a result signed with `device_public`, the key the device holds when the command arrives."""
    host, port, tls = settings.mqtt_host_port()
    context = None
    if tls:
        context = ssl.create_default_context(
            cafile=str(settings.mqtt_ca) if settings.mqtt_ca else None
        )
    async with aiomqtt.Client(
        host,
        port,
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        identifier=f"central-cmd-{uuid.uuid4().hex[:8]}",
        tls_context=context,
        timeout=10,
    ) as client:
        if wait_s > 0:
            await client.subscribe(topics.topic(site, device, "telemetry"), qos=1)
        await client.publish(topics.topic(site, device, "cmd"), signed.encode(), qos=1)
        if wait_s <= 0:
            return None
        try:
            async with asyncio.timeout(wait_s):
                async for message in client.messages:
                    found = _result(message.payload, site, device, nonce, device_public)
                    if found is not None:
                        return found
        except TimeoutError:
            return None
    return None


def _result(
    payload: typing.Any, site: str, device: str, nonce: str, device_public: bytes
) -> dict[str, typing.Any] | None:
    if not isinstance(payload, bytes | bytearray):
        return None
    try:
        parsed, claims = report.decode(bytes(payload), frozenset({report.COMMAND_RESULT}))
    except report.ReportError:
        return None
    if not isinstance(claims, report.CommandResult) or (claims.site, claims.device) != (
        site,
        device,
    ):
        return None
    if claims.nonce != nonce or not jws.verify(parsed, device_public):
        return None
    return claims.model_dump()
