from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from auth_service.rules import MAX_PASSWORD, password_problem, username_problem

USERNAME_PATTERN = r"^[a-zA-Z0-9_.-]{3,32}$"
# Deliberately simple: one @, a dot in the domain, no spaces. Deliverability is not our check.
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterIn(Strict):
    username: str = Field(pattern=USERNAME_PATTERN)
    email: str = Field(pattern=EMAIL_PATTERN, max_length=254)
    password: str = Field(max_length=MAX_PASSWORD)
    # Self-registration can never grant admin (or service): only these two are accepted.
    role: Literal["requester", "provider"] = "requester"

    @model_validator(mode="after")
    def _rules(self) -> Self:
        problem = username_problem(self.username) or password_problem(self.password, self.username)
        if problem:
            raise ValueError(problem)
        return self


class UserOut(BaseModel):
    """Also built from a ``User`` row, whose ``id`` is ``user_id``."""

    model_config = ConfigDict(from_attributes=True)

    user_id: str = Field(validation_alias=AliasChoices("user_id", "id"))
    username: str
    role: str


class ProfileOut(UserOut):
    email: str
    display_name: str | None
    active: bool
    created_at: datetime


class ProfileIn(Strict):
    email: str | None = Field(default=None, pattern=EMAIL_PATTERN, max_length=254)
    display_name: str | None = Field(default=None, max_length=64)
    # Accepted only to be refused with a clear 403: an admin sets these.
    role: str | None = None
    active: bool | None = None


class UserList(BaseModel):
    users: list[ProfileOut]
    total: int
    limit: int
    offset: int


class RoleIn(Strict):
    role: Literal["requester", "provider", "admin"]


class PasswordChangeIn(Strict):
    current_password: str = Field(max_length=MAX_PASSWORD)
    new_password: str = Field(max_length=MAX_PASSWORD)


class LogoutIn(Strict):
    refresh_token: str | None = Field(default=None, max_length=256)


class LoginOut(BaseModel):
    at: datetime
    ip: str
    user_agent: str
    success: bool
    reason: str


class ApiKeyInfo(BaseModel):
    """Built from an ``ApiKey`` row (its ``id`` is ``key_id``); never carries the secret."""

    model_config = ConfigDict(from_attributes=True)

    key_id: str = Field(validation_alias=AliasChoices("key_id", "id"))
    provider_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class LoginIn(Strict):
    username: str = Field(max_length=254)
    password: str = Field(max_length=256)


class TokenOut(BaseModel):
    token: str
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    user_id: str
    username: str
    role: str


class RefreshIn(Strict):
    refresh_token: str = Field(max_length=256)


class ApiKeyIn(Strict):
    name: str = Field(default="default", min_length=1, max_length=64)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class ApiKeyOut(BaseModel):
    key_id: str
    api_key: str
    provider_id: str
    name: str
    expires_at: datetime | None


class TokenIn(Strict):
    """Two grants on one endpoint: a provider daemon's API key, or a service's client
    credentials (``grant_type: client_credentials``)."""

    grant_type: Literal["api_key", "client_credentials"] = "api_key"
    api_key: str | None = Field(default=None, max_length=256)
    client_id: str | None = Field(default=None, max_length=64)
    client_secret: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _fields_match_grant(self) -> Self:
        if self.grant_type == "client_credentials":
            if not (self.client_id and self.client_secret):
                raise ValueError("client_credentials needs client_id and client_secret")
        elif not self.api_key:
            raise ValueError("api_key is required")
        return self


class ServiceTokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime


class ProviderTokenOut(ServiceTokenOut):
    provider_id: str


class Jwk(BaseModel):
    """One public signing key (RFC 7517); other members the key carries pass through."""

    model_config = ConfigDict(extra="allow")

    kty: str
    kid: str
    use: str = "sig"
    alg: str
    n: str
    e: str


class JwksOut(BaseModel):
    keys: list[Jwk]
