"""Registration and the heartbeat: how the registry knows this host and that it is alive."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import structlog
from nats.aio.client import Client as NATS

from provider_daemon import metrics
from provider_daemon.client import CredentialsRejected, GatewayClient
from provider_daemon.fence import save_identity
from provider_daemon.inventory import Inventory, Nvml
from provider_daemon.settings import DaemonSettings
from shared.contracts import (
    HEARTBEAT_NOT_REGISTERED,
    HEARTBEAT_OK,
    HEARTBEAT_WAIT_SECONDS,
    AttemptRef,
    heartbeat_subject,
)
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
    # set once connected with credentials of this provider's own: beats then go over NATS
    nats: NATS | None = None

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
        """Beat every interval, over NATS when this daemon has a NATS user of its own, else (or
        when NATS cannot carry the beat) over HTTP; an outage backs off (tasks go on meanwhile)
        and a registry that forgot this host gets a fresh registration."""

        async def beat() -> None:
            gpus = nvml.metrics()
            metrics.record_gpus(self.client.provider_id, gpus, self.inventory)
            body = {"gpus": gpus, "running_tasks": running(), "attempts": self._attempts()}
            answer = await self.beat_over_nats(body)
            if answer is None:
                answer = await self.beat_over_http(body)
            if answer == HEARTBEAT_NOT_REGISTERED:
                await self.register_until_done(stop)
            elif answer != HEARTBEAT_OK:
                raise RuntimeError(f"heartbeat refused: {answer}")

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

    async def beat_over_nats(self, body: dict[str, object]) -> str | None:
        """The registry's answer to a beat sent as a NATS request, or None when NATS cannot
        carry it (no credentials of our own, not connected, no registry listening, no answer
        in time): the beat then goes over HTTP, which older registries also take."""
        nc = self.nats
        if nc is None or not nc.is_connected or self.client.provider_id is None:
            return None
        try:
            reply = await nc.request(
                heartbeat_subject(self.client.provider_id),
                json.dumps(body).encode(),
                timeout=HEARTBEAT_WAIT_SECONDS,
            )
        except Exception as exc:
            log.info("heartbeat.nats_unavailable", error=str(exc) or type(exc).__name__)
            return None
        return reply.data.decode()

    async def beat_over_http(self, body: dict[str, object]) -> str:
        try:
            await self.client.heartbeat(body)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise RuntimeError(f"HTTP {exc.response.status_code}") from exc
            return HEARTBEAT_NOT_REGISTERED
        return HEARTBEAT_OK
