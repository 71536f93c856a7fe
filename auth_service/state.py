"""The auth service's lifespan state, typed, and the dependency that hands it to routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from auth_service.keys import KeyRing
from auth_service.nats_creds import NatsIssuer
from auth_service.settings import AuthSettings
from shared.app import own_state_dependency


@dataclass
class State:
    keys: KeyRing
    nats_issuer: NatsIssuer | None  # None: NATS accounts are off (no nats_dir)
    settings: AuthSettings


AuthState = Annotated[State, Depends(own_state_dependency(State))]
