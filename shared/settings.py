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
    # HTTP server limits (shared/http_server.py): request line + headers, their count, the time
    # to send them, how long an idle keep-alive connection stays open, the accept queue.
    http_max_header_bytes: int = 32 * 1024
    http_max_headers: int = 100
    http_header_timeout_seconds: float = 10.0
    http_keepalive_seconds: float = 30.0
    http_backlog: int = 4096
    # Client credentials this service presents to the auth service (a ``service`` token), e.g.
    # for the revocation feed at /internal/revocations. Empty id: the service's name; empty
    # secret in dev: the dev secret auth accepts in dev (shared.service_auth).
    service_client_id: str = ""
    service_client_secret: str = ""

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
