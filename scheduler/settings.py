from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import DEFAULT_PORTS, ServiceSettings


class SchedulerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DANTE_SCHEDULER_", extra="ignore")

    service_name: str = "scheduler"
    port: int = DEFAULT_PORTS["scheduler"]
    database_url: str = "sqlite+aiosqlite:///.dev/db/scheduler.sqlite"
    placement_interval_seconds: float = 1.0
    placement_batch: int = 200
    heartbeat_ttl_seconds: float = 30.0
