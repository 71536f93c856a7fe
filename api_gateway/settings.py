from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from shared.settings import DEFAULT_PORTS, ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DANTE_GATEWAY_", extra="ignore")

    service_name: str = "gateway"
    port: int = DEFAULT_PORTS["gateway"]
    max_body_bytes: int = 1 << 20  # JSON bodies; object uploads are capped by storage itself
    upstream_timeout_seconds: float = 30.0
    cors_origins: list[str] = []
    # Token buckets per verified user and per client address (api_gateway/ratelimit.py).
    rate_limit_enabled: bool = True
    rate_limit_user_per_second: float = 20.0
    rate_limit_user_burst: int = 100
    rate_limit_ip_per_second: float = 50.0
    rate_limit_ip_burst: int = 200
    # Provider daemons' own bucket, per provider id (heartbeats, task reports, log uploads).
    rate_limit_provider_per_second: float = 10.0
    rate_limit_provider_burst: int = 50
    # The web console's files; None: console/ beside the packages (a source checkout).
    console_dir: Path | None = None
