from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import DEFAULT_PORTS, ServiceSettings

DEV_ADMIN_PASSWORD = "dante-dev-admin"


class AuthSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DANTE_AUTH_", extra="ignore")

    service_name: str = "auth"
    port: int = DEFAULT_PORTS["auth"]
    database_url: str = "sqlite+aiosqlite:///.dev/db/auth.sqlite"
    key_dir: Path = Path(".dev/keys")
    access_ttl_seconds: int = 15 * 60
    refresh_ttl_seconds: int = 30 * 24 * 3600
    provider_token_ttl_seconds: int = 15 * 60
    admin_username: str = "admin"
    admin_email: str = "admin@dante.local"
    admin_password: str = DEV_ADMIN_PASSWORD

    secret_defaults: ClassVar[dict[str, object]] = {"admin_password": DEV_ADMIN_PASSWORD}
