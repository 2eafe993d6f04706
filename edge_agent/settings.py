"""Agent settings beyond the bundle: `--settings FILE` (TOML) and `ROOMPROOF_EDGE_<KEY>`."""

from __future__ import annotations

import pathlib
import typing

import pydantic
import pydantic_settings

from edge_agent import tomlsettings
from edge_agent.sensors import sources

ENV_PREFIX = "ROOMPROOF_EDGE_"
Sink = typing.Literal["png", "framebuffer", "web"]
_DEFAULT_SINKS: list[Sink] = ["png"]


class AgentSettings(tomlsettings.EnvOverTomlSettings):
    model_config = pydantic_settings.SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    slot_s: int = pydantic.Field(20, ge=5, le=300, description="QR rotation period (s)")
    otp_step_s: int = pydantic.Field(30, ge=10, le=300, description="one-time code step (s)")
    otp_digest: typing.Literal["sha1", "sha256"] = "sha1"
    display_sinks: list[Sink] = pydantic.Field(
        default_factory=lambda: _DEFAULT_SINKS[:], min_length=1
    )
    png_path: pathlib.Path | None = None
    framebuffer_device: pathlib.Path = pathlib.Path("/dev/fb0")
    framebuffer_width: int | None = pydantic.Field(None, ge=16, le=8192)
    framebuffer_height: int | None = pydantic.Field(None, ge=16, le=8192)
    framebuffer_bpp: typing.Literal[16, 24, 32] = 32
    web_host: str = "127.0.0.1"
    web_port: int = pydantic.Field(8081, ge=1, le=65535)
    frame_width: int = pydantic.Field(1280, ge=160, le=7680)
    frame_height: int = pydantic.Field(720, ge=120, le=4320)
    outbox_max_proofs: int = pydantic.Field(100_000, ge=10)
    outbox_max_telemetry: int = pydantic.Field(1000, ge=1)
    telemetry_interval_s: float = pydantic.Field(60, gt=0)
    watchdog_storage_grace_s: float = pydantic.Field(300, ge=0)
    metrics_file: pathlib.Path | None = None
    mqtt_keepalive_s: int = pydantic.Field(30, ge=5, le=3600)
    reconnect_max_s: float = pydantic.Field(30, ge=1)
    # Issue 14 D5: QoS 1 messages sent before the first one's PUBACK (a drain's window).
    mqtt_inflight: int = pydantic.Field(20, ge=1, le=1000)
    # End-to-end acks: a sent proof central is past without acknowledging it is sent again
    # after this long, doubling per re-send up to ack_retry_max_s.
    ack_timeout_s: float = pydantic.Field(30, ge=1, le=3600)
    ack_retry_max_s: float = pydantic.Field(900, ge=1, le=86400)
    enroll_retry_s: float = pydantic.Field(10, ge=1)
    log_level: typing.Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: typing.Literal["text", "json"] = "text"

    # Sensors (docs/configuration.md, "Sensors"); each source is one string, `off` disables it.
    wifi_source: str = "off"
    ble_source: str = "off"
    gps_source: str = "off"
    wifi_hop_channels: list[typing.Annotated[int, pydantic.Field(ge=1, le=233)]] = pydantic.Field(
        default_factory=list
    )
    wifi_hop_s: float = pydantic.Field(0.5, gt=0)
    wifi_scan_interval_s: float = pydantic.Field(30, ge=5)
    ble_silence_s: float = pydantic.Field(60, ge=5)
    ble_passive: bool = False
    window_s: float | None = pydantic.Field(None, gt=0, le=3600)
    env_strongest: int = pydantic.Field(16, ge=1, le=64)
    require_trusted_time: bool = True

    @pydantic.field_validator("wifi_source", "ble_source", "gps_source")
    @classmethod
    def _source(cls, value: str, info: pydantic.ValidationInfo) -> str:
        sources.parse(str(info.field_name).removesuffix("_source"), value)
        return value

    @property
    def observation_window_s(self) -> float:
        return self.window_s or float(self.slot_s)

    @pydantic.field_validator("display_sinks")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each sink may appear once")
        return value


def load(path: pathlib.Path | None) -> AgentSettings:
    return tomlsettings.load(AgentSettings, path, ENV_PREFIX)
