"""Billing's lifespan state, typed, and the dependency that hands it to routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from billing_service.payments import StripeCheckout
from billing_service.settings import BillingSettings
from shared.app import own_state_dependency


@dataclass
class State:
    settings: BillingSettings
    stripe: StripeCheckout


BillingState = Annotated[State, Depends(own_state_dependency(State))]
