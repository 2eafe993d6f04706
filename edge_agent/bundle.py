"""The enrollment bundle written by `central device add`: who this device is and whom to trust."""

from __future__ import annotations

import datetime
import os
import pathlib
import re
import tempfile
import typing

import pydantic

from edge_agent import tomlsettings
from edge_agent.protocol import b64
from edge_agent.protocol import names

Name = typing.Annotated[str, pydantic.AfterValidator(lambda v: names.validate("name", v))]


def _key(value: str) -> str:
    if len(b64.decode(value)) != 32:
        raise ValueError("must be a base64url 32-byte public key")
    return value


class Bundle(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    site: Name
    room: Name
    room_name: str | None = pydantic.Field(None, max_length=120)
    device: Name
    mqtt_url: str = pydantic.Field(pattern=r"^mqtts?://[^/:]+(:\d+)?/?$")
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_ca: str | None = None
    public_url: str = pydantic.Field(pattern=r"^https?://")
    central_ed25519: typing.Annotated[str, pydantic.AfterValidator(_key)]
    central_x25519: typing.Annotated[str, pydantic.AfterValidator(_key)]
    enrollment_code: str | None = None
    enrollment_expires: datetime.datetime | None = None

    @property
    def tls(self) -> bool:
        return self.mqtt_url.startswith("mqtts://")

    @property
    def mqtt_host(self) -> str:
        return self.mqtt_url.split("://", 1)[1].rstrip("/").rsplit(":", 1)[0]

    @property
    def mqtt_port(self) -> int:
        rest = self.mqtt_url.split("://", 1)[1].rstrip("/")
        return int(rest.rsplit(":", 1)[1]) if ":" in rest else (8883 if self.tls else 1883)


def load(path: pathlib.Path) -> Bundle:
    data = tomlsettings.read_toml(path)
    try:
        return Bundle(**data)
    except pydantic.ValidationError as exc:
        raise tomlsettings.ConfigError(tomlsettings.describe(exc, str(path))) from exc


def erase_code(path: pathlib.Path) -> bool:
    """Remove the one-time code from the bundle file (atomic); False when it cannot be written."""
    text = path.read_text()
    cleaned = re.sub(r"(?m)^\s*enrollment_code\s*=.*\n?", "", text)
    if cleaned == text:
        return True
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".bundle-")
        with os.fdopen(handle, "w") as out:
            out.write(cleaned)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except OSError:
        return False
    return True
