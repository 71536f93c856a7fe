"""The storage service's lifespan state, typed, and the dependency that hands it to routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from shared.app import own_state_dependency
from storage_service.service import StorageService


@dataclass
class State:
    storage: StorageService


StorageState = Annotated[State, Depends(own_state_dependency(State))]
