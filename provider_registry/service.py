"""Registry decisions: who may change a provider, liveness, and the events that say so."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import structlog

from provider_registry import metrics
from provider_registry.beats import Announcer, BeatResult, absorb, event_of, outbox_row
from provider_registry.models import Gpu, Provider, ProviderEventOutbox, gpu_summary
from provider_registry.repository import ProviderRepository
from provider_registry.schemas import AttemptIn, HeartbeatIn, ProviderIn, ProviderStatus
from shared.auth import Principal
from shared.contracts import GpuInfo, ProviderEvent
from shared.db import UnitOfWork, utcnow
from shared.errors import Forbidden, NotFound

log = structlog.get_logger(__name__)


def provider_event(
    kind: str, p: Provider, attempts: list[AttemptIn] | None = None
) -> ProviderEvent:
    """The event for an ORM provider (see :func:`provider_registry.beats.event_of`)."""
    row = {c.key: getattr(p, c.key) for c in Provider.__table__.columns}
    gpus = [{f: getattr(g, f) for f in GpuInfo.model_fields} for g in p.gpus]
    return event_of(kind, row, gpus, attempts, utcnow())


def _sync_gpus(provider: Provider, data: ProviderIn) -> None:
    """Bring the provider's GPU rows in line with the inventory a (re)starting daemon sent.

    Rows are updated in place by index: replacing them with new objects of the same key made
    SQLAlchemy turn the delete + insert into an UPDATE that left ``metrics`` NULL, and every
    re-registration of a GPU host then failed (issue 18). Metrics start empty again: the next
    heartbeat fills them.
    """
    existing = {g.index: g for g in provider.gpus}
    wanted = {g.index: g for g in data.gpus}
    for index, gpu in existing.items():
        if index not in wanted:
            provider.gpus.remove(gpu)
    for index, spec in sorted(wanted.items()):
        row = existing.get(index)
        if row is None:
            provider.gpus.append(Gpu(**spec.model_dump(), metrics={}))
            continue
        for name, value in spec.model_dump().items():
            setattr(row, name, value)
        row.metrics = {}


class RegistryService:
    def __init__(
        self,
        uow: UnitOfWork,
        outbox_wake: asyncio.Event | None = None,
        *,
        announcer: Announcer | None = None,
    ) -> None:
        """``announcer``: when each provider's last plain heartbeat event was written, and how
        often one is (see :func:`provider_registry.beats.absorb`)."""
        self.uow = uow
        self.outbox_wake = outbox_wake
        self.providers = ProviderRepository(uow.session)
        self.announcer = announcer or Announcer()

    def _emit(self, kind: str, provider: Provider, attempts: list[AttemptIn] | None = None) -> None:
        """Write the event to the outbox in this transaction (provider_registry/outbox.py
        publishes it): a request never waits on NATS, and a crash after the commit loses no
        event."""
        self.uow.session.add(
            ProviderEventOutbox(**outbox_row(provider_event(kind, provider, attempts)))
        )
        self._nudge_outbox()

    def _nudge_outbox(self) -> None:
        wake = self.outbox_wake
        if wake is not None:

            async def nudge() -> None:
                wake.set()

            self.uow.after_commit(nudge)

    async def _owned(self, provider_id: str, principal: Principal) -> Provider:
        provider = await self.providers.get(provider_id, for_update=True)
        if provider is None:
            raise NotFound("provider not found")
        if principal.is_admin:
            return provider
        if principal.provider_id is not None:
            # A daemon's token is bound to one provider: it never acts for a sibling host,
            # even one its owner also runs.
            if principal.provider_id == provider_id:
                return provider
            raise Forbidden("a provider token acts only for its own provider")
        if principal.role == "provider" and provider.owner_id == principal.user_id:
            return provider
        raise Forbidden("not your provider")

    async def register(self, principal: Principal, data: ProviderIn) -> tuple[Provider, bool]:
        """Create or update the caller's provider; its id is the one bound to its API key."""
        assert principal.provider_id is not None
        provider = await self.providers.get(principal.provider_id, for_update=True)
        created = provider is None
        now = utcnow()
        if provider is None:
            provider = Provider(id=principal.provider_id, owner_id=principal.user_id, gpus=[])
        provider.name = data.name
        provider.hostname = data.hostname
        provider.cpu_count = data.cpu_count
        provider.memory_mb = data.memory_mb
        provider.docker = data.docker
        provider.max_concurrent_tasks = data.max_concurrent_tasks
        provider.price_per_hour = data.price_per_hour
        provider.labels = dict(data.labels)
        provider.driver_version = data.driver_version
        provider.cuda_version = data.cuda_version
        provider.status = ProviderStatus.ONLINE
        provider.last_heartbeat_at = now
        provider.updated_at = now
        _sync_gpus(provider, data)
        provider.gpu_names, provider.gpu_max_vram_mb = gpu_summary(
            (g.name, g.memory_total_mb) for g in data.gpus
        )
        if created:
            await self.providers.add(provider)
        await self.uow.session.flush()
        log.info("provider.registered", provider_id=provider.id, gpus=len(data.gpus), new=created)
        self._emit("registered", provider, data.attempts)
        return provider, created

    async def heartbeat(
        self, principal: Principal, provider_id: str, hb: HeartbeatIn
    ) -> dict[str, Any]:
        """A beat over HTTP: the same Core statements as a batch from NATS, for one beat.
        Returns the provider as stored (its row with ``gpus``), read by the batch itself."""
        if principal.provider_id != provider_id:
            raise Forbidden("a provider may heartbeat only for itself")
        done = await absorb(self.uow.session, [(provider_id, hb)], self.announcer)
        if done.results[0] is BeatResult.NOT_REGISTERED:
            raise NotFound("provider not registered")
        if done.events:
            self._nudge_outbox()
        return done.providers[provider_id]

    async def set_status(
        self, principal: Principal, provider_id: str, status: ProviderStatus
    ) -> Provider:
        provider = await self._owned(provider_id, principal)
        provider.status = status
        provider.updated_at = utcnow()
        log.info("provider.status", provider_id=provider_id, status=status)
        self._emit("status", provider)
        return provider

    async def delete(self, principal: Principal, provider_id: str) -> None:
        provider = await self._owned(provider_id, principal)
        provider.status = ProviderStatus.OFFLINE
        self._emit("deleted", provider)
        await self.providers.delete(provider)
        log.info("provider.deleted", provider_id=provider_id)

    async def sweep(self, ttl_seconds: float) -> int:
        """Mark providers offline whose heartbeat is older than the TTL."""
        stale = await self.providers.stale_online(utcnow() - timedelta(seconds=ttl_seconds))
        for provider in stale:
            provider.status = ProviderStatus.OFFLINE
            log.warning(
                "provider.offline",
                provider_id=provider.id,
                last_heartbeat_at=str(provider.last_heartbeat_at),
            )
            self._emit("offline", provider)
        metrics.on_lost(self.uow, len(stale))
        return len(stale)
