"""Stripe Checkout: a session to top a wallet up, and the signed webhook that credits it.

Only the official ``stripe`` library talks to Stripe and checks signatures. The webhook is the
one source of truth for money arriving: the redirect after checkout credits nothing. A webhook
is credited once per Stripe event id (``payment_events``) and once per checkout session (the
ledger reference), so Stripe's retries and a replayed delivery change nothing; a delivery whose
signature does not verify, or whose signed timestamp is older than the tolerance, is refused.
"""

from __future__ import annotations

from typing import Any

import stripe
import structlog

from billing_service.errors import InvalidAmount, InvalidWebhook, PaymentsNotConfigured
from billing_service.models import PaymentEvent
from billing_service.service import BillingService
from billing_service.settings import BillingSettings
from shared.errors import ServiceUnavailable

log = structlog.get_logger(__name__)

CREDITING_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


class StripeCheckout:
    def __init__(
        self, settings: BillingSettings, client: stripe.StripeClient | None = None
    ) -> None:
        self.settings = settings
        self._client = client

    @property
    def client(self) -> stripe.StripeClient:
        if self._client is None:
            if not self.settings.stripe_secret_key:
                raise PaymentsNotConfigured("set DANTE_BILLING_STRIPE_SECRET_KEY to take payments")
            self._client = stripe.StripeClient(self.settings.stripe_secret_key)
        return self._client

    async def create_session(self, user_id: str, amount_minor: int) -> dict[str, Any]:
        """A Checkout Session for ``amount_minor``; the user pays on Stripe's page."""
        if amount_minor < 50:  # Stripe's own minimum charge is about 0.50 in most currencies
            raise InvalidAmount("a top-up is at least 50 minor units")
        try:
            session = await self._create(user_id, amount_minor)
        except stripe.StripeError as exc:
            log.warning("stripe.checkout_failed", error=type(exc).__name__)
            raise ServiceUnavailable("the payment provider did not answer; try again") from exc
        return {"session_id": session.id, "url": session.url}

    async def _create(self, user_id: str, amount_minor: int) -> Any:
        return await self.client.v1.checkout.sessions.create_async(
            params={
                "mode": "payment",
                "client_reference_id": user_id,
                "metadata": {"dante_user_id": user_id},
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": self.settings.currency.lower(),
                            "unit_amount": amount_minor,
                            "product_data": {"name": "Dante GPU credits"},
                        },
                    }
                ],
                "success_url": self.settings.stripe_success_url,
                "cancel_url": self.settings.stripe_cancel_url,
            }
        )

    def verify(self, payload: bytes, signature: str | None) -> stripe.Event:
        """The event if Stripe signed these bytes recently, else :class:`InvalidWebhook`."""
        if not self.settings.stripe_webhook_secret:
            raise PaymentsNotConfigured("set DANTE_BILLING_STRIPE_WEBHOOK_SECRET to take webhooks")
        try:
            return stripe.Webhook.construct_event(
                payload,
                signature,
                self.settings.stripe_webhook_secret,
                tolerance=self.settings.stripe_tolerance_seconds,
            )
        except stripe.SignatureVerificationError as exc:
            log.warning("stripe.webhook_refused", reason="signature")
            raise InvalidWebhook("signature verification failed") from exc
        except ValueError as exc:
            raise InvalidWebhook("not a JSON event") from exc


async def apply_event(service: BillingService, event: stripe.Event) -> dict[str, Any]:
    """Credit the wallet a completed, paid checkout names; anything else is recorded only."""
    if await service.payments.get(event.id) is not None:
        return {"event_id": event.id, "duplicate": True, "credited_minor": 0}
    obj = event.data.object.to_dict()  # a plain dict: nested metadata included
    user_id = None
    credited = 0
    if event.type in CREDITING_EVENTS and obj.get("payment_status") == "paid":
        user_id = (obj.get("metadata") or {}).get("dante_user_id") or obj.get("client_reference_id")
        amount = obj.get("amount_total")
        currency = str(obj.get("currency") or "").upper()
        if not user_id or not isinstance(amount, int) or amount <= 0:
            raise InvalidWebhook("a paid checkout without a user or an amount")
        if currency != service.settings.currency:
            raise InvalidWebhook(
                f"paid in {currency}, the ledger is in {service.settings.currency}"
            )
        # Keyed by session: the "completed" and "async succeeded" events of one session, or a
        # second event for it, credit once.
        if await service.grant(
            user_id, amount, ref=obj["id"], memo=f"stripe {event.id}", source="stripe"
        ):
            credited = amount
    await service.repo.add(
        PaymentEvent(
            id=event.id,
            provider="stripe",
            type=event.type,
            user_id=user_id,
            amount_minor=credited,
            payload={"object_id": obj.get("id"), "type": event.type},
        )
    )
    log.info("stripe.event", event_id=event.id, type=event.type, credited=credited)
    return {"event_id": event.id, "duplicate": False, "credited_minor": credited}
