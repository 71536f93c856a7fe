from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

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
    # Tries to publish one log chunk before it goes to the spool on disk (logged, counted and
    # sent again later; provider_daemon/logstream.py): six take about 10 s, output waiting.
    log_publish_attempts: int = 6
    # What one attempt may put on the shared LOGS stream; past it the live log says
    # "[log truncated …]" and stops (the uploaded log keeps everything). docs/nats.md.
    log_live_max_bytes: int = 32 << 20
    # How often spooled log chunks are sent again (failures back off to four times this).
    log_spool_interval_seconds: float = 15.0
    # The registry's heartbeat TTL (DANTE_REGISTRY_HEARTBEAT_TTL_SECONDS): after a failed beat
    # the daemon tries again before ``ttl - interval`` since its last stored one.
    heartbeat_ttl_seconds: float = 30.0
    # Failures past the TTL back off from the interval up to this (held to ttl - interval).
    heartbeat_max_backoff_seconds: float = 60.0
    # The Docker executor (container jobs): the Engine API socket (None: DOCKER_HOST or the
    # default socket), how long an image pull may take, and whether to pull present images.
    docker_url: str | None = None
    docker_pull_timeout_seconds: float = 600.0
    docker_pull: Literal["missing", "always"] = "missing"
    # Ask the scheduler before starting each attempt (issue 19: a task fetched just before its
    # attempt was requeued never starts). Off only for driving a daemon with hand-made tasks.
    ask_before_start: bool = True
    start_request_timeout_seconds: float = 5.0
    # Finished (job, attempt) pairs remembered to fence duplicate deliveries.
    fence_keep: int = 10_000
