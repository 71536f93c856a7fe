from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

USERNAME_PATTERN = r"^[a-zA-Z0-9_.-]{3,32}$"
# Deliberately simple: one @, a dot in the domain, no spaces. Deliverability is not our check.
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterIn(Strict):
    username: str = Field(pattern=USERNAME_PATTERN)
    email: str = Field(pattern=EMAIL_PATTERN, max_length=254)
    password: str = Field(min_length=8, max_length=256)
    role: Literal["requester", "provider"] = "requester"


class UserOut(BaseModel):
    user_id: str
    username: str
    role: str


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


class ProviderTokenIn(Strict):
    api_key: str = Field(max_length=256)


class ProviderTokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    provider_id: str
