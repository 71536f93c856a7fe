"""HTTP only: who may call what, then the service. Mounted at ``/api/v1/billing``; the hold
endpoint at ``/internal`` (the scheduler's service token only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from billing_service import invoices
from billing_service.payments import apply_event
from billing_service.schemas import (
    AccountOut,
    AccountsOut,
    BalanceOut,
    CheckoutIn,
    CheckoutOut,
    CreditLimitIn,
    EntriesOut,
    EntryOut,
    GrantIn,
    GrantOut,
    HoldIn,
    HoldOut,
    HoldsOut,
    InvoiceOut,
    PayoutIn,
    PayoutOut,
    PayoutStatementOut,
    ReconciliationOut,
    WebhookOut,
)
from billing_service.service import BillingService
from billing_service.state import BillingState
from shared.auth import AdminPrincipal, CurrentPrincipal, Principal
from shared.db import UoW, utcnow
from shared.errors import Forbidden
from shared.openapi import errors

router = APIRouter(tags=["billing"])
internal = APIRouter(tags=["internal"])
Month = Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]
PDF = {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}


def _service(state: BillingState, uow: UoW) -> BillingService:
    return BillingService(uow, state.settings)


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


@router.get("/balance", response_model=BalanceOut)
async def balance(
    principal: CurrentPrincipal, service: Service, user_id: str | None = None
) -> BalanceOut:
    return await service.balance(_user_scope(principal, user_id))


@router.get(
    "/invoices/{month}",
    response_model=InvoiceOut,
    responses={
        200: {"description": "the invoice as JSON, or as PDF for `<month>.pdf`", "content": PDF}
    },
)
async def invoice(
    month: str, principal: CurrentPrincipal, service: Service, user_id: str | None = None
) -> InvoiceOut | Response:
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
    return InvoiceOut.model_validate(data)


@router.get("/payouts/{provider_id}/{month}", response_model=PayoutStatementOut)
async def payout_statement(
    provider_id: str, month: str, principal: CurrentPrincipal, service: Service
) -> PayoutStatementOut:
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
    return PayoutStatementOut(**statement, balance_minor=account.balance_minor if account else 0)


@router.post("/checkout", status_code=201, response_model=CheckoutOut)
async def checkout(
    body: CheckoutIn, principal: CurrentPrincipal, state: BillingState
) -> CheckoutOut:
    """Start a Stripe Checkout top-up; the wallet is credited by the webhook, not by this."""
    return CheckoutOut(**await state.stripe.create_session(principal.user_id, body.amount_minor))


@router.post("/stripe/webhook", response_model=WebhookOut)
async def stripe_webhook(request: Request, state: BillingState, service: Service) -> WebhookOut:
    """Public (the gateway lets it through without a token): the signature is the check."""
    event = state.stripe.verify(await request.body(), request.headers.get("stripe-signature"))
    return WebhookOut(**await apply_event(service, event))


# --- admin --------------------------------------------------------------------------------------


@router.post("/admin/grants", response_model=GrantOut)
async def grant(body: GrantIn, _: AdminPrincipal, service: Service, response: Response) -> GrantOut:
    credited = await service.grant(body.user_id, body.amount_minor, body.reference, body.memo)
    response.status_code = 201 if credited else 200
    return GrantOut(credited=credited, balance=await service.balance(body.user_id))


@router.put("/admin/credit-limits/{user_id}", response_model=BalanceOut)
async def credit_limit(
    user_id: str, body: CreditLimitIn, _: AdminPrincipal, service: Service
) -> BalanceOut:
    return await service.set_credit_limit(user_id, body.credit_limit_minor)


@router.post(
    "/admin/payouts/{provider_id}",
    status_code=201,
    response_model=PayoutOut,
    responses=errors(402),
)
async def payout(
    provider_id: str, body: PayoutIn, _: AdminPrincipal, service: Service
) -> PayoutOut:
    paid = await service.payout(provider_id, body.amount_minor, body.reference)
    account = await service.repo.account(f"earnings:{provider_id}")
    return PayoutOut(paid=paid, balance_minor=account.balance_minor if account else 0)


@router.get("/admin/accounts", response_model=AccountsOut)
async def accounts(
    _: AdminPrincipal, service: Service, kind: str | None = Query(default=None, max_length=16)
) -> AccountsOut:
    rows = await service.repo.accounts(kind)
    return AccountsOut(
        currency=service.settings.currency,
        accounts=[AccountOut.model_validate(a) for a in rows],
    )


@router.get("/admin/accounts/{account_id}/entries", response_model=EntriesOut)
async def entries(account_id: str, _: AdminPrincipal, service: Service) -> EntriesOut:
    rows = await service.repo.entries_of(account_id)
    return EntriesOut(
        account=account_id,
        entries=[
            EntryOut(
                txn=t.ref,
                kind=t.kind,
                job_id=t.job_id,
                amount_minor=e.amount_minor,
                at=t.created_at.isoformat(),
            )
            for e, t in rows
        ],
    )


@router.get("/admin/holds", response_model=HoldsOut)
async def open_holds(_: AdminPrincipal, service: Service) -> HoldsOut:
    return HoldsOut(holds=[HoldOut.model_validate(h) for h in await service.holds.open()])


@router.get("/admin/reconciliation", response_model=ReconciliationOut)
async def reconciliation(_: AdminPrincipal, service: Service) -> ReconciliationOut:
    return ReconciliationOut.model_validate(await service.reconcile())


# --- internal: the scheduler --------------------------------------------------------------------


@internal.post("/holds", response_model=HoldOut, responses=errors(402))
async def place_hold(
    body: HoldIn,
    principal: CurrentPrincipal,
    state: BillingState,
    service: Service,
    response: Response,
) -> HoldOut:
    """402 ``insufficient_balance`` when the wallet cannot cover it (the job waits)."""
    if not principal.is_service or principal.user_id != state.settings.scheduler_subject:
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
