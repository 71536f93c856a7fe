"""Registry decisions: who may change a provider, liveness, and the events that say so."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import structlog

from provider_registry import metrics
from provider_registry.models import Gpu, Provider, ProviderEventOutbox
from provider_registry.repository import ProviderRepository
from provider_registry.schemas import AttemptIn, HeartbeatIn, ProviderIn, ProviderStatus
from shared.auth import Principal
from shared.contracts import AttemptRef, GpuInfo, ProviderEvent, provider_event_subject
from shared.db import UnitOfWork, utcnow
from shared.errors import Forbidden, NotFound

log = structlog.get_logger(__name__)


def provider_event(
    kind: str, p: Provider, attempts: list[AttemptIn] | None = None
) -> ProviderEvent:
    """``attempts``: what the daemon's beat or registration said it holds, passed on as is for
    the scheduler to reconcile its jobs against (None: this event says nothing about them)."""
    held = None if attempts is None else [AttemptRef(**a.model_dump()) for a in attempts]
    return ProviderEvent(
        kind=kind,  # type: ignore[arg-type]
        provider_id=p.id,
        owner_id=p.owner_id,
        status=p.status,
        at=utcnow(),
        max_concurrent_tasks=p.max_concurrent_tasks,
        price_per_hour=p.price_per_hour,
        cpu_count=p.cpu_count or 0,
        memory_mb=p.memory_mb or 0,
        docker=bool(p.docker),
        labels=p.labels or {},
        gpus=[GpuInfo.model_validate(g, from_attributes=True) for g in p.gpus],
        attempts=held,
    )


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
        announced: dict[str, float] | None = None,
        announce_every: float = 0.0,
    ) -> None:
        """``announced``/``announce_every``: when each provider's last plain heartbeat event
        was written (monotonic), and how often one is (see :meth:`heartbeat`)."""
        self.uow = uow
        self.outbox_wake = outbox_wake
        self.providers = ProviderRepository(uow.session)
        self.announced = {} if announced is None else announced
        self.announce_every = announce_every

    def _announce_due(self, provider_id: str) -> bool:
        now = time.monotonic()
        last = self.announced.get(provider_id)
        if last is not None and now - last < self.announce_every:
            return False
        self.announced[provider_id] = now
        return True

    def _emit(self, kind: str, provider: Provider, attempts: list[AttemptIn] | None = None) -> None:
        """Write the event to the outbox in this transaction (provider_registry/outbox.py
        publishes it): a request never waits on NATS, and a crash after the commit loses no
        event."""
        event = provider_event(kind, provider, attempts)
        self.uow.session.add(
            ProviderEventOutbox(
                msg_id=str(uuid.uuid4()),
                subject=provider_event_subject(kind),
                payload=event.model_dump(mode="json"),
                created_at=event.at,
            )
        )
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
        if created:
            await self.providers.add(provider)
        await self.uow.session.flush()
        log.info("provider.registered", provider_id=provider.id, gpus=len(data.gpus), new=created)
        self._emit("registered", provider, data.attempts)
        return provider, created

    async def heartbeat(self, principal: Principal, provider_id: str, hb: HeartbeatIn) -> Provider:
        if principal.provider_id != provider_id:
            raise Forbidden("a provider may heartbeat only for itself")
        provider = await self.providers.get(provider_id, for_update=True)
        if provider is None:
            raise NotFound("provider not registered")
        provider.last_heartbeat_at = utcnow()
        by_index = {g.index: g for g in provider.gpus}
        health_changed = False
        for m in hb.gpus:
            gpu = by_index.get(m.index)
            if gpu is None:
                continue
            if gpu.healthy != m.healthy:
                health_changed = True
                gpu.healthy = m.healthy
            values = m.model_dump(exclude={"index", "healthy"}, exclude_none=True)
            if gpu.metrics != values:  # an unchanged row is not written again
                gpu.metrics = values
        came_back = provider.status == ProviderStatus.OFFLINE
        if came_back:
            provider.status = ProviderStatus.ONLINE
            log.info("provider.back_online", provider_id=provider_id)
        # What a beat announces (issue 12): a change of status or health always; the attempts
        # the daemon holds always (the scheduler renews leases and reconciles from them,
        # scheduler/leases.py); a beat with neither only every ``announce_every`` seconds
        # per provider: it carries nothing the scheduler acts on.
        if came_back or health_changed:
            self.announced[provider_id] = time.monotonic()
            self._emit("status", provider, hb.attempts)
        elif hb.attempts is not None or self._announce_due(provider_id):
            self.announced[provider_id] = time.monotonic()
            self._emit("heartbeat", provider, hb.attempts)
        return provider

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
