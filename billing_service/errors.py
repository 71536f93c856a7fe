"""Billing's domain errors (rendered by the shared handler as ``{"error", "detail"}``)."""

from __future__ import annotations

from typing import Any

from shared.errors import BadRequest, Conflict, DanteError


class InsufficientBalance(DanteError):
    """The wallet (plus its credit limit) cannot cover the amount."""

    status_code = 402
    code = "insufficient_balance"

    def __init__(self, needed: int, available: int, **kwargs: Any) -> None:
        super().__init__(
            f"insufficient balance: needs {needed}, available {available} (minor units)", **kwargs
        )
        self.needed = needed
        self.available = available


class UnbalancedTransaction(DanteError):
    """A posting whose legs do not sum to zero: a bug, never a client's fault."""

    status_code = 500
    code = "unbalanced_transaction"


class InvalidAmount(BadRequest):
    code = "invalid_amount"


class PaymentsNotConfigured(DanteError):
    # 503, not 501: no input may make a service answer 5xx other than "unavailable" (issue 11),
    # and an unconfigured payment provider is that, for this deployment
    status_code = 503
    code = "payments_not_configured"


class InvalidWebhook(BadRequest):
    code = "invalid_webhook"


class HoldConflict(Conflict):
    code = "hold_conflict"
