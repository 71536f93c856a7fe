"""HTTP only: parse, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from auth_service.accounts import AccountService
from auth_service.nats_creds import NatsCredentialsIn, NatsCredentialsOut, issuer_or_refuse
from auth_service.schemas import (
    ApiKeyIn,
    ApiKeyInfo,
    ApiKeyOut,
    JwksOut,
    LoginIn,
    LoginOut,
    LogoutIn,
    PasswordChangeIn,
    ProfileIn,
    ProfileOut,
    ProviderTokenOut,
    RefreshIn,
    RegisterIn,
    RoleIn,
    ServiceTokenOut,
    TokenIn,
    TokenOut,
    UserList,
    UserOut,
)
from auth_service.state import AuthState
from shared.auth import (
    AdminPrincipal,
    CurrentPrincipal,
    Principal,
    ProviderPrincipal,
    require_role,
)
from shared.contracts import INT32_MAX
from shared.db import UoW
from shared.openapi import errors

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
jwks_router = APIRouter(tags=["auth"])
# Not under /api/v1 or /.well-known, so the gateway never routes it; and it answers only to a
# service token, as it lists revoked user, provider and token ids (issue 18).
internal_router = APIRouter(
    prefix="/internal",
    tags=["internal"],
    include_in_schema=False,
    dependencies=[Depends(require_role("service"))],
)


def _service(state: AuthState, uow: UoW) -> AccountService:
    return AccountService(uow, state.keys, state.settings)


Service = Annotated[AccountService, Depends(_service)]
ProviderUser = Annotated[Principal, Depends(require_role("provider"))]
KeyOwner = Annotated[Principal, Depends(require_role("provider", "admin"))]


def client_ip(request: Request) -> str:
    """The gateway appends the peer it saw to ``X-Forwarded-For``; the last entry is the one
    our own proxy added (auth is not reachable from outside except through it)."""
    forwarded = request.headers.getlist("x-forwarded-for")
    if forwarded:
        return forwarded[-1].split(",")[-1].strip()
    return request.client.host if request.client else ""


@jwks_router.get("/.well-known/jwks.json")
async def jwks(state: AuthState) -> JwksOut:
    return JwksOut.model_validate(state.keys.jwks())


@internal_router.get("/revocations")
async def revocations(service: Service) -> dict[str, object]:
    """The revocation feed every TokenVerifier polls (see shared/auth.py)."""
    return await service.revocation_feed()


@router.post("/register", status_code=201, response_model=UserOut)
async def register(body: RegisterIn, service: Service) -> UserOut:
    user = await service.register(body)
    return UserOut(user_id=user.id, username=user.username, role=user.role)


@router.post("/login", response_model=TokenOut, responses=errors(401))
async def login(body: LoginIn, request: Request, service: Service) -> TokenOut:
    agent = request.headers.get("user-agent", "")
    return await service.login(
        body.username, body.password, ip=client_ip(request), user_agent=agent
    )


@router.post("/refresh", response_model=TokenOut, responses=errors(401))
async def refresh(body: RefreshIn, service: Service) -> TokenOut:
    return await service.refresh(body.refresh_token)


@router.post("/logout", status_code=204)
async def logout(
    principal: CurrentPrincipal, service: Service, body: LogoutIn | None = None
) -> Response:
    await service.logout(principal, body.refresh_token if body else None)
    return Response(status_code=204)


@router.get("/me", response_model=ProfileOut)
async def me(principal: CurrentPrincipal, service: Service) -> ProfileOut:
    return ProfileOut.model_validate(await service.user(principal.user_id))


@router.put("/me", response_model=ProfileOut)
async def update_me(body: ProfileIn, principal: CurrentPrincipal, service: Service) -> ProfileOut:
    return ProfileOut.model_validate(await service.update_profile(principal.user_id, body))


@router.post("/password", response_model=TokenOut)
async def change_password(
    body: PasswordChangeIn, principal: CurrentPrincipal, service: Service
) -> TokenOut:
    return await service.change_password(
        principal.user_id, body.current_password, body.new_password
    )


@router.get("/me/logins", response_model=list[LoginOut])
async def my_logins(
    principal: CurrentPrincipal, service: Service, limit: int = Query(default=50, ge=1, le=500)
) -> list[LoginOut]:
    return await service.login_history(principal.user_id, limit)


# --- admin -------------------------------------------------------------------------------------


@router.get("/users", response_model=UserList)
async def list_users(
    _: AdminPrincipal,
    service: Service,
    role: str | None = Query(default=None, max_length=16),
    q: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=INT32_MAX),
) -> UserList:
    rows, total = await service.users.search(role=role, query=q, limit=limit, offset=offset)
    return UserList(
        users=[ProfileOut.model_validate(u) for u in rows], total=total, limit=limit, offset=offset
    )


@router.get("/users/{user_id}", response_model=ProfileOut)
async def get_user(user_id: str, _: AdminPrincipal, service: Service) -> ProfileOut:
    return ProfileOut.model_validate(await service.user(user_id))


@router.post("/users/{user_id}/disable", response_model=ProfileOut)
async def disable_user(user_id: str, admin: AdminPrincipal, service: Service) -> ProfileOut:
    return ProfileOut.model_validate(await service.set_active(admin, user_id, False))


@router.post("/users/{user_id}/enable", response_model=ProfileOut)
async def enable_user(user_id: str, admin: AdminPrincipal, service: Service) -> ProfileOut:
    return ProfileOut.model_validate(await service.set_active(admin, user_id, True))


@router.put("/users/{user_id}/role", response_model=ProfileOut)
async def set_role(
    user_id: str, body: RoleIn, admin: AdminPrincipal, service: Service
) -> ProfileOut:
    return ProfileOut.model_validate(await service.set_role(admin, user_id, body.role))


@router.get("/users/{user_id}/logins", response_model=list[LoginOut])
async def user_logins(
    user_id: str,
    _: AdminPrincipal,
    service: Service,
    limit: int = Query(default=50, ge=1, le=500),
) -> list[LoginOut]:
    return await service.login_history(user_id, limit)


# --- provider keys -----------------------------------------------------------------------------


@router.post("/api-keys", status_code=201, response_model=ApiKeyOut)
async def create_api_key(body: ApiKeyIn, principal: ProviderUser, service: Service) -> ApiKeyOut:
    """A provider creates a key for one of its hosts. The key is shown once, here."""
    return await service.create_api_key(principal.user_id, body.name, body.expires_in_days)


@router.get("/api-keys", response_model=list[ApiKeyInfo])
async def list_api_keys(principal: KeyOwner, service: Service) -> list[ApiKeyInfo]:
    return await service.list_api_keys(principal.user_id)


@router.delete("/api-keys/{key_id}", status_code=204)
async def revoke_api_key(key_id: str, principal: KeyOwner, service: Service) -> Response:
    await service.revoke_api_key(principal, key_id)
    return Response(status_code=204)


@router.post("/token", response_model=ProviderTokenOut | ServiceTokenOut, responses=errors(401))
async def token(body: TokenIn, service: Service) -> ProviderTokenOut | ServiceTokenOut:
    """A provider daemon exchanges its API key for a short-lived token bound to its provider;
    a service exchanges its client credentials for a short-lived ``service`` token."""
    if body.grant_type == "client_credentials":
        assert body.client_id is not None and body.client_secret is not None
        return service.service_token(body.client_id, body.client_secret)
    assert body.api_key is not None
    return await service.provider_token(body.api_key)


@router.post("/nats-credentials", response_model=NatsCredentialsOut)
async def nats_credentials(
    body: NatsCredentialsIn, principal: ProviderPrincipal, state: AuthState
) -> NatsCredentialsOut:
    """A daemon's NATS user: its own tasks only (see docs/nats.md). Provider tokens only."""
    issuer = issuer_or_refuse(state.nats_issuer)
    assert principal.provider_id is not None
    return issuer.issue(principal.provider_id, body.public_key)
