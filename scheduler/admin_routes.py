"""Admin API for the scheduling policies (issue 17): owner shares and quotas, cordons.

Under ``/api/v1/scheduler`` (routed by the gateway to the scheduler). Reads of one's own
policy are open to its owner; every write needs an admin token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from scheduler import policy_store
from scheduler.models import OwnerPolicy, ProviderView
from scheduler.service import SchedulerService
from scheduler.state import SchedulerState
from shared.auth import AdminPrincipal, CurrentPrincipal
from shared.db import UoW, utcnow
from shared.errors import NotFound

router = APIRouter(prefix="/api/v1/scheduler", tags=["scheduling policy"])


def _service(state: SchedulerState, uow: UoW) -> SchedulerService:
    return SchedulerService(uow, state.js, state.settings)


Service = Annotated[SchedulerService, Depends(_service)]


class PolicyWrite(BaseModel):
    share: float = Field(default=1.0, ge=0, le=1_000_000, description="fair-share weight")
    max_gpus: int | None = Field(default=None, ge=0, description="concurrent GPUs")
    max_gpu_hours: float | None = Field(default=None, ge=0, description="GPU-hours per period")
    period_seconds: int = Field(default=30 * 86_400, ge=3600, le=366 * 86_400)


class PolicyRead(PolicyWrite):
    model_config = ConfigDict(from_attributes=True)

    owner_id: str
    updated_at: datetime | None = None


class Policies(BaseModel):
    policies: list[PolicyRead]


class CordonWrite(BaseModel):
    reason: str = Field(default="cordoned by an admin", max_length=255)
    evict: bool = Field(
        default=False,
        description="also stop and requeue what runs there (counted as preempted, not failed)",
    )


class CordonRead(BaseModel):
    provider_id: str
    cordoned: bool
    reason: str | None
    requeued: list[str] = Field(default_factory=list)


@router.get("/policies")
async def list_policies(_: AdminPrincipal, service: Service) -> Policies:
    rows = await policy_store.policies(service.uow.session)
    return Policies(policies=[PolicyRead.model_validate(r) for r in rows.values()])


@router.get("/policies/{owner_id}")
async def get_policy(owner_id: str, principal: CurrentPrincipal, service: Service) -> PolicyRead:
    """An owner's share and quotas (the defaults if none was set); self or admin."""
    if not principal.can_see(owner_id):
        raise NotFound("no such policy")
    row = await service.uow.session.get(OwnerPolicy, owner_id)
    if row is None:
        return PolicyRead(owner_id=owner_id)
    return PolicyRead.model_validate(row)


@router.put("/policies/{owner_id}")
async def put_policy(
    owner_id: str, body: PolicyWrite, _: AdminPrincipal, service: Service
) -> PolicyRead:
    row = await policy_store.set_policy(
        service.uow.session,
        owner_id,
        share=body.share,
        max_gpus=body.max_gpus,
        max_gpu_hours=body.max_gpu_hours,
        period_seconds=body.period_seconds,
        now=utcnow(),
    )
    return PolicyRead.model_validate(row)


async def _view(service: SchedulerService, provider_id: str) -> ProviderView:
    view = await service.providers.get(provider_id)
    if view is None:
        raise NotFound("provider not known to the scheduler; check GET /api/v1/providers")
    return view


@router.post("/providers/{provider_id}/cordon")
async def cordon(
    provider_id: str, body: CordonWrite, principal: AdminPrincipal, service: Service
) -> CordonRead:
    """No new work on this provider; with ``evict``, what runs there is requeued too."""
    view = await _view(service, provider_id)
    view.cordoned = True
    view.cordon_reason = body.reason
    requeued: list[str] = []
    if body.evict:
        for job in await service.jobs.active_on(provider_id):
            await service.evict(job, f"provider {provider_id} drained by {principal.user_id}")
            requeued.append(job.id)
    return CordonRead(provider_id=provider_id, cordoned=True, reason=body.reason, requeued=requeued)


@router.delete("/providers/{provider_id}/cordon")
async def uncordon(provider_id: str, _: AdminPrincipal, service: Service) -> CordonRead:
    view = await _view(service, provider_id)
    view.cordoned = False
    view.cordon_reason = None
    return CordonRead(provider_id=provider_id, cordoned=False, reason=None)
