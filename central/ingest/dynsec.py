"""Per-device broker accounts through Mosquitto's dynamic security plugin.

Each device gets its own account (username = MQTT client id = `{site}-{device}`) and role:
it may publish only under `roomproof/v1/{site}/{device}/` and subscribe only to its own
`cmd`; revoking disables the account. Central sends the plugin's JSON commands on
`$CONTROL/dynamic-security/v1` with its own (dynsec admin) account and reads the answers.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import typing
import uuid

import aiomqtt

from central.core import settings as settings_mod
from edge_agent.protocol import topics

CONTROL = "$CONTROL/dynamic-security/v1"
CENTRAL_ROLE = "roomproof-central"
ALREADY = ("already exists", "already has role", "already in role")


class DynsecError(Exception):
    """The broker refused a command (or did not answer)."""


def username(site: str, device: str) -> str:
    return f"{site}-{device}"


def _role(site: str, device: str) -> str:
    return f"roomproof-device-{site}-{device}"


def device_commands(site: str, device: str, password: str) -> list[dict[str, typing.Any]]:
    role = _role(site, device)
    own = topics.topic(site, device, "cmd").rsplit("/", 1)[0]  # roomproof/v1/{site}/{device}
    return [
        {"command": "createRole", "rolename": role},
        {
            "command": "addRoleACL",
            "rolename": role,
            "acltype": "publishClientSend",
            "topic": f"{own}/#",
            "allow": True,
        },
        {
            "command": "addRoleACL",
            "rolename": role,
            "acltype": "subscribePattern",
            "topic": f"{own}/cmd",
            "allow": True,
        },
        {
            "command": "createClient",
            "username": username(site, device),
            "password": password,
            "clientid": username(site, device),
            "roles": [{"rolename": role}],
        },
        # A device added again (a new bundle) keeps its account with the new password.
        {"command": "setClientPassword", "username": username(site, device), "password": password},
        {"command": "enableClient", "username": username(site, device)},
    ]


def central_role_commands() -> list[dict[str, typing.Any]]:
    """The role that lets central publish commands and enrollment replies to every device."""
    return [
        {"command": "createRole", "rolename": CENTRAL_ROLE},
        {
            "command": "addRoleACL",
            "rolename": CENTRAL_ROLE,
            "acltype": "publishClientSend",
            "topic": "roomproof/v1/+/+/cmd",
            "allow": True,
        },
    ]


def revoke_commands(site: str, device: str) -> list[dict[str, typing.Any]]:
    return [{"command": "disableClient", "username": username(site, device)}]


async def grant_central(settings: settings_mod.CentralSettings) -> None:
    """Gives central's own account the central role. The broker drops a client whose roles
    change, so this request is sent without waiting for an answer, last."""
    await run(settings, central_role_commands())
    command = {
        "command": "addClientRole",
        "username": settings.mqtt_username or "",
        "rolename": CENTRAL_ROLE,
    }
    await run(settings, [command], answer=False)


async def run(
    settings: settings_mod.CentralSettings,
    commands: list[dict[str, typing.Any]],
    answer: bool = True,
) -> list[dict[str, typing.Any]]:
    """Sends the commands in one request; errors other than "already exists" raise."""
    host, port, tls = settings.mqtt_host_port()
    context = None
    if tls:
        context = ssl.create_default_context(
            cafile=str(settings.mqtt_ca) if settings.mqtt_ca else None
        )
    try:
        async with aiomqtt.Client(
            host,
            port,
            username=settings.mqtt_username,
            password=settings.mqtt_password,
            identifier=f"central-dynsec-{uuid.uuid4().hex[:8]}",
            tls_context=context,
            timeout=10,
        ) as client:
            if not answer:
                await client.publish(CONTROL, json.dumps({"commands": commands}), qos=0)
                return []
            await client.subscribe(f"{CONTROL}/response", qos=1)
            await client.publish(CONTROL, json.dumps({"commands": commands}), qos=1)
            async with asyncio.timeout(10):
                async for message in client.messages:
                    reply: dict[str, typing.Any] = json.loads(message.payload)
                    responses: list[dict[str, typing.Any]] = reply.get("responses", [])
                    break
    except (aiomqtt.MqttError, TimeoutError, ValueError) as exc:
        raise DynsecError(f"broker {settings.mqtt_url}: {exc}") from exc
    for response in responses:
        error = response.get("error")
        if error and not any(text in str(error) for text in ALREADY):
            raise DynsecError(f"{response.get('command')}: {error}")
    return responses
