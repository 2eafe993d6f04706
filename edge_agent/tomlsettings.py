"""Settings from a TOML file plus environment variables, with one-line error messages.

Shared by the agent and central so that both report configuration problems the same way:
`error: FILE: KEY: what is wrong`, exit code 2, never a traceback.
"""

from __future__ import annotations

import pathlib
import tomllib
import typing

import pydantic
import pydantic_settings

SettingsT = typing.TypeVar("SettingsT", bound=pydantic_settings.BaseSettings)


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator."""


class EnvOverTomlSettings(pydantic_settings.BaseSettings):
    """Environment variables override values given to the constructor (read from TOML)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[pydantic_settings.BaseSettings],
        init_settings: pydantic_settings.PydanticBaseSettingsSource,
        env_settings: pydantic_settings.PydanticBaseSettingsSource,
        dotenv_settings: pydantic_settings.PydanticBaseSettingsSource,
        file_secret_settings: pydantic_settings.PydanticBaseSettingsSource,
    ) -> tuple[pydantic_settings.PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


def read_toml(path: pathlib.Path | None) -> dict[str, typing.Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except PermissionError as exc:
        raise ConfigError(f"{path}: permission denied") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a directory, expected a TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 text ({exc.reason})") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from exc


def describe(exc: pydantic.ValidationError, source: str, env_prefix: str = "") -> str:
    """The first validation problem as `source: key: message`."""
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(file)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown setting"
    elif first["type"] == "missing":
        message = "required setting is missing"
    hint = (
        f" (or {env_prefix}{key.upper()})"
        if env_prefix and first["type"] != "extra_forbidden"
        else ""
    )
    return f"{source}: {key}{hint}: {message}"


def load(
    settings_cls: type[SettingsT],
    path: pathlib.Path | None,
    env_prefix: str = "",
    **extra: typing.Any,
) -> SettingsT:
    data = {**read_toml(path), **extra}
    # Keys are passed as keyword arguments: only declared settings, never pydantic-settings'
    # own `_env_file`, `_cli_parse_args`, ... (which would change how settings are read).
    unknown = sorted(key for key in data if key not in settings_cls.model_fields)
    if unknown:
        source = str(path) if path else "settings"
        key = unknown[0][:80] if unknown[0][:80].isprintable() else repr(unknown[0][:80])
        raise ConfigError(f"{source}: {key}: unknown setting")
    try:
        return settings_cls(**data)
    except pydantic.ValidationError as exc:
        raise ConfigError(describe(exc, str(path) if path else "settings", env_prefix)) from exc
