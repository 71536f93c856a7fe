from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from scheduler.schemas import (
    CancelAccepted,
    JobDetail,
    JobEventRead,
    JobEvents,
    JobList,
    JobRead,
    JobSpecRead,
    UsageRead,
)
from scheduler.service import SchedulerService
from scheduler.state import SchedulerState
from shared.auth import CurrentPrincipal
from shared.contracts import JobState
from shared.db import UoW
from shared.errors import BadRequest

router = APIRouter(prefix="/api/v1", tags=["jobs"])


async def _service(state: SchedulerState, uow: UoW) -> SchedulerService:
    return SchedulerService(uow, state.js, state.settings)


Service = Annotated[SchedulerService, Depends(_service)]


def _cursor(value: str | None) -> tuple[datetime, str] | None:
    if not value:
        return None
    try:
        at, _, job_id = base64.urlsafe_b64decode(value.encode()).decode().partition("|")
        return datetime.fromisoformat(at), job_id
    except ValueError as exc:
        raise BadRequest("invalid cursor", code="invalid_cursor") from exc


def _aware(at: datetime | None) -> datetime | None:
    """A timestamp without a zone is taken as UTC (every stored time is UTC)."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


@router.get("/jobs")
async def list_jobs(
    principal: CurrentPrincipal,
    service: Service,
    state: JobState | None = None,
    tag: str | None = Query(default=None, max_length=128),
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = None,
) -> JobList:
    """Newest first; ``next_cursor`` continues the same filtered listing."""
    owner = None if principal.is_admin else principal.user_id
    rows = await service.jobs.list_for(
        owner,
        state=state,
        tag=tag,
        created_after=_aware(created_after),
        created_before=_aware(created_before),
        limit=limit,
        before=_cursor(cursor),
    )
    next_cursor = None
    if len(rows) == limit:
        last = rows[-1]
        next_cursor = base64.urlsafe_b64encode(
            f"{last.created_at.isoformat()}|{last.id}".encode()
        ).decode()
    return JobList(jobs=[JobRead.of(j) for j in rows], next_cursor=next_cursor)


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, principal: CurrentPrincipal, service: Service) -> JobDetail:
    return JobDetail.of(await service.get_visible(job_id, principal))


@router.get("/jobs/{job_id}/spec")
async def job_spec(job_id: str, principal: CurrentPrincipal, service: Service) -> JobSpecRead:
    job = await service.get_visible(job_id, principal)
    return JobSpecRead(job_id=job.id, spec=job.job_spec)


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, principal: CurrentPrincipal, service: Service) -> JobEvents:
    await service.get_visible(job_id, principal)
    events = await service.jobs.events(job_id)
    return JobEvents(job_id=job_id, events=[JobEventRead.model_validate(e) for e in events])


@router.post("/jobs/{job_id}/cancel", status_code=202)
async def cancel_job(job_id: str, principal: CurrentPrincipal, service: Service) -> CancelAccepted:
    job = await service.cancel(job_id, principal)
    return CancelAccepted(job_id=job.id, status=JobState(job.state))


@router.get("/usage", tags=["usage"])
async def usage(
    principal: CurrentPrincipal,
    service: Service,
    since: datetime | None = None,
    until: datetime | None = None,
    records: int = Query(default=50, ge=0, le=1000),
) -> UsageRead:
    """A requester sees what it used and owes; a provider what it earned; an admin, totals."""
    return await service.usage_for(
        principal, since=_aware(since), until=_aware(until), records=records
    )
