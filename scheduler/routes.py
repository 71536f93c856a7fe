from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from scheduler.service import SchedulerService, public
from shared.auth import CurrentPrincipal
from shared.contracts import JobState
from shared.db import UoW
from shared.errors import BadRequest

router = APIRouter(prefix="/api/v1", tags=["jobs"])


def _service(request: Request, uow: UoW) -> SchedulerService:
    return SchedulerService(uow, request.app.state.js, request.app.state.settings)


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
) -> dict[str, Any]:
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
    return {"jobs": [public(j) for j in rows], "next_cursor": next_cursor}


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, principal: CurrentPrincipal, service: Service) -> dict[str, Any]:
    return public(await service.get_visible(job_id, principal), detail=True)


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, principal: CurrentPrincipal, service: Service) -> dict[str, Any]:
    await service.get_visible(job_id, principal)
    events = await service.jobs.events(job_id)
    return {
        "job_id": job_id,
        "events": [
            {
                "at": e.at,
                "from": e.from_state,
                "to": e.to_state,
                "attempt": e.attempt,
                "cause": e.cause,
            }
            for e in events
        ],
    }


@router.post("/jobs/{job_id}/cancel", status_code=202)
async def cancel_job(job_id: str, principal: CurrentPrincipal, service: Service) -> JSONResponse:
    job = await service.cancel(job_id, principal)
    return JSONResponse(
        {"job_id": job.id, "status": job.state, "message": "cancellation requested"},
        status_code=202,
    )


@router.get("/usage", tags=["usage"])
async def usage(
    principal: CurrentPrincipal,
    service: Service,
    since: datetime | None = None,
    until: datetime | None = None,
    records: int = Query(default=50, ge=0, le=1000),
) -> dict[str, Any]:
    """A requester sees what it used and owes; a provider what it earned; an admin, totals."""
    owner: str | None = None
    provider_ids: list[str] | None = None
    if principal.role == "provider":
        provider_ids = await service.providers.owned_by(principal.user_id)
        if principal.provider_id and principal.provider_id not in provider_ids:
            provider_ids.append(principal.provider_id)
        scope = "provider"
    elif principal.is_admin:
        scope = "all"
    else:
        owner = principal.user_id
        scope = "requester"
    summary = await service.usage.summary(
        owner_id=owner, provider_ids=provider_ids, since=_aware(since), until=_aware(until)
    )
    rows = await service.usage.records(owner_id=owner, provider_ids=provider_ids, limit=records)
    return {
        "scope": scope,
        "provider_ids": provider_ids,
        **summary,
        "records": [
            {
                "job_id": r.job_id,
                "attempt": r.attempt,
                "state": r.state,
                "provider_id": r.provider_id,
                "gpu_model": r.gpu_model,
                "gpu_count": r.gpu_count,
                "started_at": r.started_at,
                "ended_at": r.ended_at,
                "seconds": r.seconds,
                "gpu_seconds": r.gpu_seconds,
                "price_per_hour": r.price_per_hour,
                "cost": r.cost,
            }
            for r in rows
        ],
    }
