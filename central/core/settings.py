"""Central's settings: `--config FILE` or ROOMPROOF_CENTRAL_CONFIG, then ROOMPROOF_CENTRAL_<KEY>."""

from __future__ import annotations

import ipaddress
import os
import pathlib
import socket
import typing

import pydantic
import pydantic_settings

from edge_agent import tomlsettings

ENV_PREFIX = "ROOMPROOF_CENTRAL_"
CONFIG_ENV = "ROOMPROOF_CENTRAL_CONFIG"


class CentralSettings(tomlsettings.EnvOverTomlSettings):
    model_config = pydantic_settings.SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    data_dir: pathlib.Path = pathlib.Path("roomproof-data")
    # Set: the store is this PostgreSQL database (several central processes share it) instead
    # of data_dir/central.db; central's keys stay in data_dir either way.
    database_url: str | None = pydantic.Field(None, pattern=r"^postgres(ql)?://")
    http_host: str = "127.0.0.1"
    http_port: int = pydantic.Field(8080, ge=0, le=65535)
    http_tls_cert: pathlib.Path | None = None
    http_tls_key: pathlib.Path | None = None
    trusted_proxies: list[str] = pydantic.Field(default_factory=list)
    public_url: str = pydantic.Field(
        "http://127.0.0.1:8080", pattern=r"^https?://[^\s/]+(/[^\s]*)?$"
    )
    mqtt_url: str = pydantic.Field("mqtt://127.0.0.1:1883", pattern=r"^mqtts?://[^/:\s]+(:\d+)?/?$")
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_ca: pathlib.Path | None = None
    # Stable across restarts so the broker keeps this process's session (and what it queued);
    # give each process its own id when several run on one host.
    mqtt_client_id: str = pydantic.Field(
        default_factory=lambda: f"central-{socket.gethostname()}"[:64], min_length=1, max_length=64
    )
    mqtt_share_group: str = pydantic.Field("central", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    device_mqtt_url: str | None = pydantic.Field(None, pattern=r"^mqtts?://[^/:\s]+(:\d+)?/?$")
    device_mqtt_username: str | None = None
    device_mqtt_password: str | None = None
    broker_dynsec: bool = False
    # End-to-end acks to devices (docs/protocol.md "Acknowledgements"): at most one per
    # device per ack_interval_s; off behaves as a central from before acks.
    device_acks: bool = True
    ack_interval_s: float = pydantic.Field(2, gt=0, le=60)
    clock_tolerance_s: float = pydantic.Field(900, gt=0)
    clock_alert_s: float = pydantic.Field(60, gt=0)
    token_slots_accepted: int = pydantic.Field(2, ge=1, le=10)
    enrollment_ttl_h: float = pydantic.Field(72, gt=0)
    credential_ttl_days: float = pydantic.Field(180, gt=0)
    otp_attempts_per_minute: int = pydantic.Field(5, ge=1)
    otp_attempts_per_client_per_minute: int = pydantic.Field(300, ge=1)
    checkin_requests_per_client_per_minute: int = pydantic.Field(1200, ge=1)
    link_views_per_client_per_minute: int = pydantic.Field(60, ge=1)
    proof_max_bytes: int = pydantic.Field(16384, ge=1024, le=1_048_576)
    profile_learn_proofs: int = pydantic.Field(10, ge=1, le=10_000)
    offline_grace_s: float = pydantic.Field(60, gt=0)
    checkin_opens_min: int = pydantic.Field(15, ge=0, le=240)
    checkout_after_end_min: int = pydantic.Field(60, ge=0, le=1440)
    checkin_require_verified: bool = False
    # On by default; it only acts when campus_networks names the campus's subnets.
    flag_off_campus: bool = True
    campus_networks: dict[str, list[str]] = pydantic.Field(default_factory=dict)
    retention_days: float = pydantic.Field(180, gt=0, le=36500)
    # Outbound webhooks: attempts per event, the first retry delay (doubling, with jitter, up
    # to the cap), the per-attempt timeout, and how often due deliveries and ended sessions
    # are looked for.
    webhook_max_attempts: int = pydantic.Field(8, ge=1, le=50)
    webhook_backoff_s: float = pydantic.Field(10, gt=0, le=3600)
    webhook_backoff_max_s: float = pydantic.Field(3600, gt=0, le=86400)
    webhook_timeout_s: float = pydantic.Field(10, gt=0, le=120)
    webhook_poll_s: float = pydantic.Field(1, gt=0, le=60)
    verify_link_ttl_days: float = pydantic.Field(30, gt=0, le=3650)
    log_level: typing.Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: typing.Literal["text", "json"] = "text"
    # Open event streams per token (per central process); the next one gets 429.
    event_streams_per_token: int = pydantic.Field(8, ge=1, le=1000)
    # Webhooks post only to globally reachable addresses: a URL whose host
    # resolves to a loopback, private, link-local, CGNAT, multicast, unspecified, reserved or
    # cloud-metadata address is refused at registration and at every delivery, unless its
    # host name is listed here (exactly, case-insensitive) or the address lies in one of these
    # networks (CIDR).
    webhook_allow_hosts: list[str] = pydantic.Field(default_factory=list)
    webhook_allow_networks: list[str] = pydantic.Field(default_factory=list)
    # Student PINs: the shortest new PIN; wrong PINs per student before the
    # exponential backoff starts, its first wait and its cap; failed PINs per client address a
    # minute; concurrent Argon2 verifications and how many more may wait for one (beyond that,
    # or a client's share of it, 429 at once).
    pin_min_length: int = pydantic.Field(6, ge=6, le=64)
    pin_failures_before_backoff: int = pydantic.Field(5, ge=1, le=100)
    pin_backoff_s: float = pydantic.Field(30, gt=0, le=3600)
    pin_backoff_max_s: float = pydantic.Field(3600, gt=0, le=86400)
    pin_failures_per_client_per_minute: int = pydantic.Field(30, ge=1)
    pin_verify_concurrency: int = pydantic.Field(2, ge=1, le=64)
    pin_verify_queue: int = pydantic.Field(8, ge=0, le=1000)
    # Central refuses a broker that lets anyone connect without credentials,
    # unless this is set (a loud warning at each start).
    allow_anonymous_broker: bool = False

    @pydantic.field_validator("trusted_proxies", "webhook_allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for subnet in value:
            try:
                ipaddress.ip_network(subnet, strict=False)
            except ValueError as exc:
                raise ValueError(f"{subnet!r} is not an address or subnet (CIDR)") from exc
        return value

    @pydantic.model_validator(mode="after")
    def _tls_pair(self) -> CentralSettings:
        if (self.http_tls_cert is None) != (self.http_tls_key is None):
            raise ValueError("http_tls_cert and http_tls_key go together")
        return self

    @pydantic.field_validator("campus_networks")
    @classmethod
    def _subnets(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for building, subnets in value.items():
            for subnet in subnets:
                try:
                    ipaddress.ip_network(subnet, strict=False)
                except ValueError as exc:
                    raise ValueError(f"{building}: {subnet!r} is not a subnet (CIDR)") from exc
        return value

    @property
    def public_base(self) -> str:
        return self.public_url.rstrip("/")

    @property
    def db_path(self) -> pathlib.Path:
        return self.data_dir / "central.db"

    def mqtt_host_port(self) -> tuple[str, int, bool]:
        tls = self.mqtt_url.startswith("mqtts://")
        rest = self.mqtt_url.split("://", 1)[1].rstrip("/")
        host, _, port = rest.partition(":")
        return host, int(port) if port else (8883 if tls else 1883), tls

    @pydantic.field_validator("webhook_allow_hosts")
    @classmethod
    def _allowed_hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not host or len(host) > 253 or any(c.isspace() or c in "/:@[]" for c in host):
                raise ValueError(f"{host!r} is not a host name (give addresses as networks)")
        return [host.lower().rstrip(".") for host in value]


def load(path: pathlib.Path | None) -> CentralSettings:
    if path is None and os.environ.get(CONFIG_ENV):
        path = pathlib.Path(os.environ[CONFIG_ENV])
    return tomlsettings.load(CentralSettings, path, ENV_PREFIX)
