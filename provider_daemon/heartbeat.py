"""Registration and the heartbeat: how the registry knows this host and that it is alive."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import structlog

from provider_daemon import metrics
from provider_daemon.client import CredentialsRejected, GatewayClient
from provider_daemon.fence import save_identity
from provider_daemon.inventory import Inventory, Nvml
from provider_daemon.settings import DaemonSettings
from shared.contracts import AttemptRef
from shared.loops import Backoff, LeaseBackoff, ReadyChecks, every, retry

log = structlog.get_logger(__name__)

# Registration and the platform calls made before the daemon runs: from 0.5 s doubling to 30 s,
# until they work or the daemon is told to stop. A refused API key is not retried.
STARTUP = Backoff(base=0.25, cap=30.0, jitter=0.5)


def heartbeat_backoff(settings: DaemonSettings) -> LeaseBackoff:
    """The interval with ±20 % jitter (so a fleet restarted together does not beat in step).
    After a failure the next try comes before ``ttl - interval`` since the last stored beat,
    then before the TTL, so one lost beat never gets a healthy host swept; a host already past
    its TTL backs off from the interval up to ``heartbeat_max_backoff_seconds`` (held to
    ``ttl - interval``: a registry back from an outage hears within its grace of one TTL)."""
    return LeaseBackoff(
        interval=settings.heartbeat_interval_seconds,
        ttl=settings.heartbeat_ttl_seconds,
        cap=settings.heartbeat_max_backoff_seconds,
    )


def refused(exc: BaseException) -> bool:
    return isinstance(exc, CredentialsRejected)


def _no_attempts() -> list[AttemptRef]:
    return []


@dataclass
class Registration:
    settings: DaemonSettings
    client: GatewayClient
    inventory: Inventory
    # the attempts this host holds (``TaskRunner.held``), sent with every registration and
    # heartbeat so the scheduler can reconcile its jobs with what really runs here
    held: Callable[[], list[AttemptRef]] = field(default=_no_attempts)

    def _attempts(self) -> list[dict[str, object]]:
        return [a.model_dump() for a in self.held()]

    async def register(self) -> str:
        s = self.settings
        body = {
            "name": s.name,
            "hostname": s.name,
            "max_concurrent_tasks": s.max_concurrent_tasks,
            "price_per_hour": s.price_per_hour,
            "labels": s.labels,
            **self.inventory.registration(),
            "attempts": self._attempts(),
        }
        provider = await self.client.register(body)
        save_identity(self.settings.state_dir, provider["id"])
        log.info(
            "provider.registered",
            provider_id=provider["id"],
            gpus=len(self.inventory.gpus),
            cpus=self.inventory.cpu_count,
            memory_mb=self.inventory.memory_mb,
            docker=self.inventory.docker,
        )
        return str(provider["id"])

    async def register_until_done(self, stop: asyncio.Event) -> str:
        return await retry("register", self.register, stop=stop, backoff=STARTUP, give_up=refused)

    async def heartbeats(
        self,
        nvml: Nvml,
        running: Callable[[], int],
        stop: asyncio.Event,
        ready: ReadyChecks | None = None,
    ) -> None:
        """Beat every interval; an outage backs off (tasks go on meanwhile) and a registry that
        forgot this host (404) gets a fresh registration."""

        async def beat() -> None:
            gpus = nvml.metrics()
            metrics.record_gpus(self.client.provider_id, gpus, self.inventory)
            body = {"gpus": gpus, "running_tasks": running(), "attempts": self._attempts()}
            try:
                await self.client.heartbeat(body)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 404:
                    raise RuntimeError(f"HTTP {exc.response.status_code}") from exc
                await self.register_until_done(stop)

        backoff = heartbeat_backoff(self.settings)
        await every(
            "heartbeat",
            beat,
            self.settings.heartbeat_interval_seconds,
            stop=stop,
            backoff=backoff,
            ready=ready,
            first_after=backoff.delay(0),
            give_up=refused,
        )
