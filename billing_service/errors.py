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
    status_code = 501
    code = "payments_not_configured"


class InvalidWebhook(BadRequest):
    code = "invalid_webhook"


class HoldConflict(Conflict):
    code = "hold_conflict"
