"""HTTP only: who may call what, then the service. Mounted at ``/api/v1/billing``; the hold
endpoint at ``/internal`` (the scheduler's service token only)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from billing_service import invoices
from billing_service.payments import StripeCheckout, apply_event
from billing_service.schemas import (
    BalanceOut,
    CheckoutIn,
    CreditLimitIn,
    GrantIn,
    GrantOut,
    HoldIn,
    HoldOut,
    PayoutIn,
)
from billing_service.service import BillingService
from shared.auth import AdminPrincipal, CurrentPrincipal, Principal
from shared.db import UoW, utcnow
from shared.errors import Forbidden

router = APIRouter(tags=["billing"])
internal = APIRouter(tags=["internal"])
Month = Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]


def _service(request: Request, uow: UoW) -> BillingService:
    return BillingService(uow, request.app.state.settings)


Service = Annotated[BillingService, Depends(_service)]


def _this_month() -> str:
    return utcnow().strftime("%Y-%m")


def _user_scope(principal: Principal, user_id: str | None) -> str:
    """A user sees their own books; an admin anyone's (``?user_id=``)."""
    if user_id is None or user_id == principal.user_id:
        return principal.user_id
    if not principal.is_admin:
        raise Forbidden("only an admin sees another user's billing")
    return user_id


def _balance(b: Any) -> BalanceOut:
    return BalanceOut(**dataclasses.asdict(b))


@router.get("/balance", response_model=BalanceOut)
async def balance(
    principal: CurrentPrincipal, service: Service, user_id: str | None = None
) -> BalanceOut:
    return _balance(await service.balance(_user_scope(principal, user_id)))


@router.get("/invoices/{month}")
async def invoice(
    month: str, principal: CurrentPrincipal, service: Service, user_id: str | None = None
) -> Response:
    """``/invoices/2026-11`` (JSON) or ``/invoices/2026-11.pdf``."""
    as_pdf = month.endswith(".pdf")
    month = month.removesuffix(".pdf")
    data = await invoices.invoice(
        service.settlements, service.settings, _user_scope(principal, user_id), month
    )
    if as_pdf:
        return Response(
            invoices.invoice_pdf(data),
            media_type="application/pdf",
            headers={"content-disposition": f'inline; filename="{data["invoice_id"]}.pdf"'},
        )
    return JSONResponse(data)


@router.get("/payouts/{provider_id}/{month}")
async def payout_statement(
    provider_id: str, month: str, principal: CurrentPrincipal, service: Service
) -> dict[str, Any]:
    """A provider's statement: its own key (``pid``), the account that owns it, or an admin."""
    account = await service.repo.account(f"earnings:{provider_id}")
    mine = principal.provider_id == provider_id or (
        account is not None and account.owner_id == principal.user_id
    )
    if not (mine or principal.is_admin):
        raise Forbidden("not your provider")
    statement = await invoices.payout_statement(
        service.settlements, service.settings, provider_id, month
    )
    statement["balance_minor"] = account.balance_minor if account else 0
    return statement


@router.post("/checkout", status_code=201)
async def checkout(
    body: CheckoutIn, principal: CurrentPrincipal, request: Request
) -> dict[str, Any]:
    """Start a Stripe Checkout top-up; the wallet is credited by the webhook, not by this."""
    stripe_: StripeCheckout = request.app.state.stripe
    return await stripe_.create_session(principal.user_id, body.amount_minor)


@router.post("/stripe/webhook")
async def stripe_webhook(request: Request, service: Service) -> dict[str, Any]:
    """Public (the gateway lets it through without a token): the signature is the check."""
    stripe_: StripeCheckout = request.app.state.stripe
    event = stripe_.verify(await request.body(), request.headers.get("stripe-signature"))
    return await apply_event(service, event)


# --- admin --------------------------------------------------------------------------------------


@router.post("/admin/grants", response_model=GrantOut)
async def grant(body: GrantIn, _: AdminPrincipal, service: Service, response: Response) -> GrantOut:
    credited = await service.grant(body.user_id, body.amount_minor, body.reference, body.memo)
    response.status_code = 201 if credited else 200
    return GrantOut(credited=credited, balance=_balance(await service.balance(body.user_id)))


@router.put("/admin/credit-limits/{user_id}", response_model=BalanceOut)
async def credit_limit(
    user_id: str, body: CreditLimitIn, _: AdminPrincipal, service: Service
) -> BalanceOut:
    return _balance(await service.set_credit_limit(user_id, body.credit_limit_minor))


@router.post("/admin/payouts/{provider_id}", status_code=201)
async def payout(
    provider_id: str, body: PayoutIn, _: AdminPrincipal, service: Service
) -> dict[str, Any]:
    paid = await service.payout(provider_id, body.amount_minor, body.reference)
    account = await service.repo.account(f"earnings:{provider_id}")
    return {"paid": paid, "balance_minor": account.balance_minor if account else 0}


@router.get("/admin/accounts")
async def accounts(
    _: AdminPrincipal, service: Service, kind: str | None = Query(default=None, max_length=16)
) -> dict[str, Any]:
    rows = await service.repo.accounts(kind)
    return {
        "currency": service.settings.currency,
        "accounts": [
            {
                "id": a.id,
                "kind": a.kind,
                "owner_id": a.owner_id,
                "balance_minor": a.balance_minor,
                "credit_limit_minor": a.credit_limit_minor,
            }
            for a in rows
        ],
    }


@router.get("/admin/accounts/{account_id}/entries")
async def entries(account_id: str, _: AdminPrincipal, service: Service) -> dict[str, Any]:
    rows = await service.repo.entries_of(account_id)
    return {
        "account": account_id,
        "entries": [
            {
                "txn": t.ref,
                "kind": t.kind,
                "job_id": t.job_id,
                "amount_minor": e.amount_minor,
                "at": t.created_at.isoformat(),
            }
            for e, t in rows
        ],
    }


@router.get("/admin/holds")
async def open_holds(_: AdminPrincipal, service: Service) -> dict[str, Any]:
    return {"holds": [HoldOut.model_validate(h).model_dump() for h in await service.holds.open()]}


@router.get("/admin/reconciliation")
async def reconciliation(_: AdminPrincipal, service: Service) -> dict[str, Any]:
    return await service.reconcile()


# --- internal: the scheduler --------------------------------------------------------------------


@internal.post("/holds", response_model=HoldOut)
async def place_hold(
    body: HoldIn,
    principal: CurrentPrincipal,
    request: Request,
    service: Service,
    response: Response,
) -> HoldOut:
    """402 ``insufficient_balance`` when the wallet cannot cover it (the job waits)."""
    if (
        not principal.is_service
        or principal.user_id != request.app.state.settings.scheduler_subject
    ):
        raise Forbidden("holds are placed by the scheduler")
    hold, created = await service.place_hold(
        body.job_id,
        body.attempt,
        body.owner_id,
        body.price_micros_per_hour,
        body.units,
        body.timeout_seconds,
    )
    response.status_code = 201 if created else 200
    return HoldOut.model_validate(hold)
