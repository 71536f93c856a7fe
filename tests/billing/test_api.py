"""The billing API in-process (real app, real SQLite/PostgreSQL, real nats-server): Stripe
webhooks signed by the test and verified by the official library, the scheduler's holds,
grants, credit limits, payouts and who may see what.

No call reaches Stripe's servers: webhooks are signed here with a test secret, and the one
Checkout call goes to a local stand-in of Stripe's API (``base_addresses``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import stripe
import uvicorn
from fastapi import FastAPI, Request

from billing_service.main import create_app
from billing_service.payments import StripeCheckout
from billing_service.settings import BillingSettings
from tests.support.servers import free_port, wait_for_port

WEBHOOK_SECRET = "whsec_test_" + "x" * 24
WEBHOOK = "/api/v1/billing/stripe/webhook"


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """A ``Stripe-Signature`` header as Stripe computes it (HMAC-SHA256 over ``t.payload``)."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def checkout_event(
    user_id: str,
    amount: int,
    *,
    event_id: str | None = None,
    session: str | None = None,
    kind: str = "checkout.session.completed",
) -> bytes:
    event = {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": kind,
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "data": {
            "object": {
                "id": session or f"cs_test_{uuid.uuid4().hex}",
                "object": "checkout.session",
                "amount_total": amount,
                "currency": "usd",
                "payment_status": "paid",
                "client_reference_id": user_id,
                "metadata": {"dante_user_id": user_id},
            }
        },
    }
    return json.dumps(event).encode()


class FakeStripeApi:
    """A local stand-in of ``POST /v1/checkout/sessions`` that records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        app = FastAPI()

        @app.post("/v1/checkout/sessions")
        async def create(request: Request) -> dict[str, Any]:
            form = dict(parse_qsl((await request.body()).decode()))
            self.requests.append({"form": form, "auth": request.headers.get("authorization")})
            return {
                "id": "cs_test_local",
                "object": "checkout.session",
                "url": "https://checkout.stripe.test/pay/cs_test_local",
            }

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None)
        )

    def __enter__(self) -> FakeStripeApi:
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripeApi]:
    with FakeStripeApi() as api:
        yield api


@pytest.fixture
async def billing(
    db_url: str, nats_url: str, local_jwks: Callable[[], Any], fake_stripe: FakeStripeApi
) -> AsyncIterator[httpx.AsyncClient]:
    settings = BillingSettings(
        database_url=db_url,
        nats_url=nats_url,
        port=0,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_secret_key="sk_test_local",
        platform_fee_bp=2000,
    )
    client = stripe.StripeClient(
        "sk_test_local",
        base_addresses={"api": f"http://127.0.0.1:{fake_stripe.port}"},
        max_network_retries=0,
    )
    app = create_app(settings, jwks=local_jwks, stripe_checkout=StripeCheckout(settings, client))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://billing") as c:
            yield c


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def balance_of(billing: httpx.AsyncClient, mint_token: Callable[..., str], user: str) -> int:
    r = await billing.get("/api/v1/billing/balance", headers=bearer(mint_token("requester", user)))
    assert r.status_code == 200, r.text
    return r.json()["balance_minor"]


async def post_webhook(
    billing: httpx.AsyncClient, payload: bytes, signature: str | None
) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["stripe-signature"] = signature
    return await billing.post(WEBHOOK, content=payload, headers=headers)


async def test_signed_checkout_credits_once_per_event_and_session(
    billing: httpx.AsyncClient, mint_token: Callable[..., str]
) -> None:
    user = str(uuid.uuid4())
    session = f"cs_test_{uuid.uuid4().hex}"
    payload = checkout_event(user, 2500, session=session)
    r = await post_webhook(billing, payload, sign(payload))
    assert r.status_code == 200, r.text
    assert r.json()["credited_minor"] == 2500
    assert await balance_of(billing, mint_token, user) == 2500
    # Stripe retries the same event: acknowledged, not credited again
    r = await post_webhook(billing, payload, sign(payload))
    assert r.status_code == 200 and r.json() == {**r.json(), "duplicate": True, "credited_minor": 0}
    # another event about the same session (async payment succeeded): not credited again
    again = checkout_event(
        user, 2500, session=session, kind="checkout.session.async_payment_succeeded"
    )
    r = await post_webhook(billing, again, sign(again))
    assert r.status_code == 200 and r.json()["credited_minor"] == 0
    assert await balance_of(billing, mint_token, user) == 2500


@pytest.mark.parametrize(
    "forge",
    ["wrong_secret", "tampered_amount", "old_timestamp", "no_header", "garbage_header"],
)
async def test_forged_or_replayed_webhooks_are_refused(
    billing: httpx.AsyncClient, mint_token: Callable[..., str], forge: str
) -> None:
    user = str(uuid.uuid4())
    payload = checkout_event(user, 9900)
    signature: str | None = sign(payload)
    if forge == "wrong_secret":
        signature = sign(payload, secret="whsec_attacker_" + "y" * 20)
    elif forge == "tampered_amount":
        payload = payload.replace(b'"amount_total": 9900', b'"amount_total": 990000')
    elif forge == "old_timestamp":  # a genuine delivery captured and replayed 10 minutes later
        signature = sign(payload, at=int(time.time()) - 600)
    elif forge == "no_header":
        signature = None
    else:
        signature = "t=1,v1=deadbeef"
    r = await post_webhook(billing, payload, signature)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_webhook"
    assert await balance_of(billing, mint_token, user) == 0


async def test_checkout_session_is_created_with_the_official_client(
    billing: httpx.AsyncClient, mint_token: Callable[..., str], fake_stripe: FakeStripeApi
) -> None:
    user = str(uuid.uuid4())
    r = await billing.post(
        "/api/v1/billing/checkout",
        json={"amount_minor": 1234},
        headers=bearer(mint_token("requester", user)),
    )
    assert r.status_code == 201, r.text
    assert r.json()["session_id"] == "cs_test_local"
    [sent] = fake_stripe.requests
    assert sent["auth"] == "Bearer sk_test_local"
    form = sent["form"]
    assert form["line_items[0][price_data][unit_amount]"] == "1234"
    assert form["line_items[0][price_data][currency]"] == "usd"
    assert form["metadata[dante_user_id]"] == user
    assert await balance_of(billing, mint_token, user) == 0  # only the webhook credits


async def test_holds_are_the_schedulers_and_refused_without_funds(
    billing: httpx.AsyncClient, mint_token: Callable[..., str]
) -> None:
    owner, job = str(uuid.uuid4()), str(uuid.uuid4())
    scheduler = bearer(mint_token("service", "service:scheduler"))
    body = {
        "job_id": job,
        "attempt": 1,
        "owner_id": owner,
        "price_micros_per_hour": 3_600_000_000,  # 3,600.00 per GPU-hour: 1.00 a second
        "units": 2,
        "timeout_seconds": 30,
    }
    r = await billing.post(
        "/internal/holds", json=body, headers=bearer(mint_token("requester", owner))
    )
    assert r.status_code == 403
    r = await billing.post(
        "/internal/holds", json=body, headers=bearer(mint_token("service", "service:other"))
    )
    assert r.status_code == 403
    r = await billing.post("/internal/holds", json=body, headers=scheduler)
    assert r.status_code == 402, r.text
    assert r.json()["error"] == "insufficient_balance"
    assert "insufficient balance" in r.json()["detail"]

    admin = bearer(mint_token("admin", str(uuid.uuid4())))
    # a postpaid account: 30 s x 2 GPUs x 1.00 = 60.00 fits a 60.00 credit limit
    r = await billing.put(
        f"/api/v1/billing/admin/credit-limits/{owner}",
        json={"credit_limit_minor": 6000},
        headers=admin,
    )
    assert r.status_code == 200 and r.json()["available_minor"] == 6000
    r = await billing.post("/internal/holds", json=body, headers=scheduler)
    assert r.status_code == 201, r.text
    assert r.json()["amount_minor"] == 6000
    r = await billing.post("/internal/holds", json=body, headers=scheduler)  # asked again
    assert r.status_code == 200 and r.json()["amount_minor"] == 6000
    r = await billing.get("/api/v1/billing/balance", headers=bearer(mint_token("requester", owner)))
    assert r.json()["held_minor"] == 6000 and r.json()["available_minor"] == 0
    r = await billing.put(
        f"/api/v1/billing/admin/credit-limits/{owner}",
        json={"credit_limit_minor": 10},
        headers=admin,
    )
    assert r.status_code == 400  # the wallet is already 60.00 below zero


async def test_ops_endpoints(billing: httpx.AsyncClient) -> None:
    assert (await billing.get("/health")).json() == {"status": "ok", "service": "billing"}
    r = await billing.get("/ready")
    checks = r.json()["checks"]
    assert r.status_code == 200 and {"database", "nats"} <= set(checks)
    # the background loops (shared/loops.py) add theirs as they start (the consumer's
    # creation answers for it until its consumer exists): all ok
    assert set(checks) - {"database", "nats"} <= {
        "loop.billing.reconcile",
        "loop.consumer.billing-usage",
        "loop.consumer.billing-usage.create",
    }
    assert set(checks.values()) == {"ok"}
    metrics = (await billing.get("/metrics")).text
    assert "dante_billing_books_balanced" in metrics
    assert "dante_billing_settlements_total" in metrics


async def test_grants_payouts_and_who_sees_what(
    billing: httpx.AsyncClient, mint_token: Callable[..., str]
) -> None:
    user, other = str(uuid.uuid4()), str(uuid.uuid4())
    admin = bearer(mint_token("admin", str(uuid.uuid4())))
    grant = {"user_id": user, "amount_minor": 500, "reference": "r1"}
    r = await billing.post(
        "/api/v1/billing/admin/grants", json=grant, headers=bearer(mint_token("requester", user))
    )
    assert r.status_code == 403
    for bad in (
        {**grant, "amount_minor": 0},
        {**grant, "amount_minor": 1.5},
        {**grant, "extra": 1},
    ):
        r = await billing.post("/api/v1/billing/admin/grants", json=bad, headers=admin)
        assert r.status_code == 422 and r.json()["error"] == "validation_error"
    r = await billing.post("/api/v1/billing/admin/grants", json=grant, headers=admin)
    assert r.status_code == 201
    r = await billing.get(
        "/api/v1/billing/balance",
        params={"user_id": user},
        headers=bearer(mint_token("requester", other)),
    )
    assert r.status_code == 403
    r = await billing.get("/api/v1/billing/balance", params={"user_id": user}, headers=admin)
    assert r.json()["balance_minor"] == 500
    r = await billing.get("/api/v1/billing/invoices/2026-13", headers=admin)
    assert r.status_code == 400
    # a provider with no earnings cannot be paid out
    pid = str(uuid.uuid4())
    r = await billing.post(
        f"/api/v1/billing/admin/payouts/{pid}",
        json={"amount_minor": 1, "reference": "p1"},
        headers=admin,
    )
    assert r.status_code == 402
    r = await billing.get(
        f"/api/v1/billing/payouts/{pid}/2026-11", headers=bearer(mint_token("provider", other))
    )
    assert r.status_code == 403
    r = await billing.get(
        f"/api/v1/billing/payouts/{pid}/2026-11",
        headers=bearer(mint_token("provider", other, provider_id=pid)),
    )
    assert r.status_code == 200 and r.json()["earned_minor"] == 0
    r = await billing.get("/api/v1/billing/admin/reconciliation", headers=admin)
    assert r.json()["ok"] is True
