from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from provider_registry.schemas import (
    HeartbeatIn,
    ProviderIn,
    ProviderList,
    ProviderOut,
    ProviderStatus,
    StatusIn,
)
from provider_registry.service import RegistryService
from provider_registry.state import RegistryState
from shared.auth import CurrentPrincipal, ProviderPrincipal
from shared.contracts import INT32_MAX
from shared.db import UoW
from shared.errors import BadRequest, NotFound

router = APIRouter(tags=["providers"])


async def _service(state: RegistryState, uow: UoW) -> RegistryService:
    return RegistryService(uow, state.outbox_wake, announcer=state.announcer)


Service = Annotated[RegistryService, Depends(_service)]


@router.post(
    "",
    status_code=201,
    response_model=ProviderOut,
    responses={200: {"model": ProviderOut, "description": "re-registered: hardware updated"}},
)
async def register(
    body: ProviderIn, principal: ProviderPrincipal, service: Service, response: Response
) -> ProviderOut:
    """Register (or re-register, updating the hardware) the caller's own provider."""
    provider, created = await service.register(principal, body)
    response.status_code = 201 if created else 200
    return ProviderOut.model_validate(provider)


@router.get("", response_model=ProviderList)
async def list_providers(
    _: CurrentPrincipal,
    service: Service,
    status: ProviderStatus | None = None,
    gpu_model: str | None = Query(default=None, max_length=128),
    min_vram: int | None = Query(default=None, ge=0, le=INT32_MAX, description="MiB"),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=INT32_MAX),
    cursor: str | None = Query(default=None, max_length=256, description="next_cursor"),
    count: bool = Query(default=False, description="also count every match (total)"),
) -> ProviderList:
    """Oldest registration first. ``next_cursor`` continues the same filtered listing;
    ``total`` (a count over every match) only when asked for with ``count=true``."""
    repo = service.providers
    rows, more = await repo.search(
        status=status,
        gpu_model=gpu_model,
        min_vram_mb=min_vram,
        limit=limit,
        offset=offset,
        after=_cursor(cursor),
    )
    total = None
    if count:
        total = await repo.count(status=status, gpu_model=gpu_model, min_vram_mb=min_vram)
    next_cursor = None
    if more and rows:
        last = rows[-1]
        raw = f"{last['registered_at'].isoformat()}|{last['id']}".encode()
        next_cursor = base64.urlsafe_b64encode(raw).decode()
    return ProviderList(
        providers=[ProviderOut.model_validate(p) for p in rows],
        total=total,
        has_more=more,
        next_cursor=next_cursor,
    )


def _cursor(value: str | None) -> tuple[datetime, str] | None:
    if not value:
        return None
    try:
        at, _, provider_id = base64.urlsafe_b64decode(value.encode()).decode().partition("|")
        return _aware(datetime.fromisoformat(at)), provider_id
    except ValueError as exc:
        raise BadRequest(
            "invalid cursor: pass next_cursor as given", code="invalid_cursor"
        ) from exc


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


@router.get("/{provider_id}", response_model=ProviderOut)
async def get_provider(provider_id: str, _: CurrentPrincipal, service: Service) -> ProviderOut:
    provider = await service.providers.get(provider_id)
    if provider is None:
        raise NotFound("provider not found")
    return ProviderOut.model_validate(provider)


@router.delete("/{provider_id}", status_code=204)
async def delete_provider(provider_id: str, principal: CurrentPrincipal, service: Service) -> None:
    await service.delete(principal, provider_id)


@router.put("/{provider_id}/status", response_model=ProviderOut)
async def set_status(
    provider_id: str, body: StatusIn, principal: CurrentPrincipal, service: Service
) -> ProviderOut:
    return ProviderOut.model_validate(await service.set_status(principal, provider_id, body.status))


@router.post("/{provider_id}/heartbeat", response_model=ProviderOut)
async def heartbeat(
    provider_id: str, body: HeartbeatIn, principal: ProviderPrincipal, service: Service
) -> ProviderOut:
    return ProviderOut.model_validate(await service.heartbeat(principal, provider_id, body))
