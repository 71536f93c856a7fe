"""The storage service's lifespan state, typed, and the dependency that hands it to routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from shared.app import own_state
from storage_service.service import StorageService


@dataclass
class State:
    storage: StorageService


def _state(request: Request) -> State:
    return own_state(request.app, State)


StorageState = Annotated[State, Depends(_state)]
