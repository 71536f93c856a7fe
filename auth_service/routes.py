"""HTTP only: parse, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from auth_service.schemas import (
    ApiKeyIn,
    ApiKeyOut,
    LoginIn,
    ProviderTokenOut,
    RefreshIn,
    RegisterIn,
    ServiceTokenOut,
    TokenIn,
    TokenOut,
    UserOut,
)
from auth_service.service import AuthService
from shared.auth import CurrentPrincipal, Principal, require_role
from shared.db import UoW

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
jwks_router = APIRouter(tags=["auth"])


def _service(request: Request, uow: UoW) -> AuthService:
    return AuthService(uow, request.app.state.keys, request.app.state.settings)


Service = Annotated[AuthService, Depends(_service)]
ProviderUser = Annotated[Principal, Depends(require_role("provider"))]


@jwks_router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> dict[str, Any]:
    return request.app.state.keys.jwks()


@router.post("/register", status_code=201, response_model=UserOut)
async def register(body: RegisterIn, service: Service) -> UserOut:
    user = await service.register(body)
    return UserOut(user_id=user.id, username=user.username, role=user.role)


@router.post("/login", response_model=TokenOut)
async def login(body: LoginIn, service: Service) -> TokenOut:
    return await service.login(body.username, body.password)


@router.post("/refresh", response_model=TokenOut)
async def refresh(body: RefreshIn, service: Service) -> TokenOut:
    return await service.refresh(body.refresh_token)


@router.get("/me", response_model=UserOut)
async def me(principal: CurrentPrincipal) -> UserOut:
    return UserOut(user_id=principal.user_id, username=principal.username, role=principal.role)


@router.post("/api-keys", status_code=201, response_model=ApiKeyOut)
async def create_api_key(body: ApiKeyIn, principal: ProviderUser, service: Service) -> ApiKeyOut:
    """A provider creates a key for one of its hosts. The key is shown once, here."""
    return await service.create_api_key(principal.user_id, body.name, body.expires_in_days)


@router.post("/token", response_model=ProviderTokenOut | ServiceTokenOut)
async def token(body: TokenIn, service: Service) -> ProviderTokenOut | ServiceTokenOut:
    """A provider daemon exchanges its API key for a short-lived token bound to its provider;
    a service exchanges its client credentials for a short-lived ``service`` token."""
    if body.grant_type == "client_credentials":
        assert body.client_id is not None and body.client_secret is not None
        return service.service_token(body.client_id, body.client_secret)
    assert body.api_key is not None
    return await service.provider_token(body.api_key)
