from __future__ import annotations

import socket
from pathlib import Path

from pydantic_settings import SettingsConfigDict

from shared.settings import DEFAULT_PORTS, ServiceSettings


class DaemonSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DANTE_DAEMON_", extra="ignore")

    service_name: str = "daemon"
    port: int = DEFAULT_PORTS["daemon"]
    gateway_url: str = "http://127.0.0.1:8080"
    api_key: str = ""
    state_dir: Path = Path(".dev/daemon")
    name: str = socket.gethostname()
    max_concurrent_tasks: int = 4
    price_per_hour: float = 0.0
    labels: dict[str, str] = {}
    heartbeat_interval_seconds: float = 10.0
    drain_grace_seconds: float = 30.0
    log_flush_seconds: float = 0.1
