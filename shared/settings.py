"""The settings base every service's one settings class extends."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORTS: dict[str, int] = {
    "gateway": 8080,
    "auth": 8090,
    "registry": 8002,
    "scheduler": 8003,
    "storage": 8082,
    "daemon": 8085,
    "billing": 8086,
}
"""Each service's default port (ARCHITECTURE)."""


def default_static_services() -> dict[str, list[str]]:
    return {name: [f"http://127.0.0.1:{port}"] for name, port in DEFAULT_PORTS.items()}


class InsecureDefault(ValueError):
    """A secret was left at its development default outside dev mode."""


class ServiceSettings(BaseSettings):
    """Fields every service shares. Subclasses set ``env_prefix`` (``DANTE_AUTH_`` …)."""

    model_config = SettingsConfigDict(env_prefix="DANTE_", extra="ignore")

    service_name: str = "service"
    environment: Literal["dev", "prod"] = "dev"
    log_level: str = "INFO"
    log_json: bool | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    advertise_host: str | None = None
    nats_url: str = "nats://127.0.0.1:4222"
    discovery: Literal["static", "consul"] = "static"
    static_services: dict[str, list[str]] = default_static_services()
    consul_host: str = "127.0.0.1"
    consul_port: int = 8500
    jwt_issuer: str = "dante-auth"
    jwt_audience: str = "dante"
    # How stale a verifier's copy of the auth service's revocation feed may get (shared/auth.py).
    revocation_poll_seconds: float = 5.0

    # Names of fields that hold secrets, and the dev defaults that must not survive into prod.
    secret_defaults: ClassVar[dict[str, object]] = {}

    @property
    def dev(self) -> bool:
        return self.environment == "dev"

    @property
    def json_logs(self) -> bool:
        return (not self.dev) if self.log_json is None else self.log_json

    @property
    def base_url(self) -> str:
        return f"http://{self.advertise_host or self.host}:{self.port}"

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Self:
        if self.dev:
            return self
        for field, default in self.secret_defaults.items():
            if getattr(self, field) == default:
                prefix = self.model_config.get("env_prefix", "")
                raise InsecureDefault(
                    f"{prefix}{field.upper()} is left at its development default; "
                    "set it (or set environment=dev)"
                )
        return self
