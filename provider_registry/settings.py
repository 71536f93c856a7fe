from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import DEFAULT_PORTS, ServiceSettings


class RegistrySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DANTE_REGISTRY_", extra="ignore")

    service_name: str = "registry"
    port: int = DEFAULT_PORTS["registry"]
    database_url: str = "sqlite+aiosqlite:///.dev/db/registry.sqlite"
    heartbeat_ttl_seconds: float = 30.0
    sweep_interval_seconds: float = 5.0
    # The fleet gauges (by status, GPUs by health, each provider's heartbeat age) are re-read
    # with a sweep at most this often: at 10,000 providers a re-read holds the event loop long
    # enough to be the tail of every request meanwhile (issue 12). A Prometheus scrape
    # interval is 15-30 s.
    metrics_refresh_seconds: float = 30.0
    # A heartbeat that lists no attempts and changes nothing the scheduler reads (status,
    # health) is announced at most this often per provider (issue 12); one that lists the
    # attempts its daemon holds is always announced: the scheduler's leases read them.
    heartbeat_event_every_seconds: float = 60.0
