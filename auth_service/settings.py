from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

from pydantic import model_validator
from pydantic_settings import SettingsConfigDict

from shared.service_auth import DEV_SERVICE_SECRET
from shared.settings import DEFAULT_PORTS, InsecureDefault, ServiceSettings

DEV_ADMIN_PASSWORD = "dante-dev-admin"
DEV_CLIENTS = ("scheduler", "gateway", "registry", "storage")
"""Service clients auth accepts in dev with the dev secret (each reads the revocation feed)."""
MIN_SERVICE_SECRET = 32  # characters: a generated secret (``secrets.token_urlsafe(32)`` is 43)


class AuthSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DANTE_AUTH_", extra="ignore")

    service_name: str = "auth"
    port: int = DEFAULT_PORTS["auth"]
    database_url: str = "sqlite+aiosqlite:///.dev/db/auth.sqlite"
    key_dir: Path = Path(".dev/keys")
    access_ttl_seconds: int = 15 * 60
    refresh_ttl_seconds: int = 30 * 24 * 3600
    provider_token_ttl_seconds: int = 15 * 60
    service_token_ttl_seconds: int = 15 * 60
    # Per-provider NATS users (docs/nats.md): the folder holding account-signing.seed and
    # account.pub from shared.nats_auth.bootstrap; None: NATS runs without them.
    nats_dir: Path | None = None
    nats_user_ttl_seconds: int = 3600
    admin_username: str = "admin"
    admin_email: str = "admin@dante.local"
    admin_password: str = DEV_ADMIN_PASSWORD
    # Services that call each other with a client-credentials token: {client_id: secret}.
    # Empty means: in dev, every service with the dev secret; outside dev, no client at all.
    service_clients: dict[str, str] = {}
    # Failed logins tolerated per account and per client IP within the window, then 429.
    login_window_seconds: int = 15 * 60
    login_max_failures_per_account: int = 5
    login_max_failures_per_ip: int = 30

    secret_defaults: ClassVar[dict[str, object]] = {"admin_password": DEV_ADMIN_PASSWORD}

    @model_validator(mode="after")
    def _refuse_weak_client_secrets(self) -> Self:
        if self.dev:
            if not self.service_clients:
                self.service_clients = dict.fromkeys(DEV_CLIENTS, DEV_SERVICE_SECRET)
            return self
        for client_id, secret in self.service_clients.items():
            if secret == DEV_SERVICE_SECRET or len(secret) < MIN_SERVICE_SECRET:
                raise InsecureDefault(
                    f"DANTE_AUTH_SERVICE_CLIENTS[{client_id!r}] is a default or weak secret; "
                    f"use at least {MIN_SERVICE_SECRET} random characters"
                )
        return self

    @property
    def max_token_ttl(self) -> int:
        """The longest an access token lives: how long a revocation must be remembered."""
        return max(
            self.access_ttl_seconds,
            self.provider_token_ttl_seconds,
            self.service_token_ttl_seconds,
        )
