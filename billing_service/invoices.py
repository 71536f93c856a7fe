"""Monthly invoices (requesters) and payout statements (providers), as data and as PDF."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import Any

from billing_service import money, pdf
from billing_service.errors import InvalidAmount
from billing_service.repository import SettlementRepository
from billing_service.settings import BillingSettings


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """``"2026-11"`` → [start, end) in UTC."""
    try:
        year, mon = (int(x) for x in month.split("-"))
        start = datetime(year, mon, 1, tzinfo=UTC)
    except (ValueError, TypeError) as exc:
        raise InvalidAmount("month is YYYY-MM") from exc
    days = calendar.monthrange(year, mon)[1]
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=UTC)
    assert (end - start).days == days
    return start, end


async def invoice(
    repo: SettlementRepository, settings: BillingSettings, user_id: str, month: str
) -> dict[str, Any]:
    start, end = month_bounds(month)
    lines: list[dict[str, Any]] = []
    for s in await repo.for_owner(user_id, start, end):
        if s.collected_minor == 0 and s.run_microseconds == 0:
            continue  # never ran: nothing to show
        lines.append(
            {
                "kind": "job",
                "job_id": s.job_id,
                "attempt": s.attempt,
                "state": s.state,
                "provider_id": s.provider_id,
                "gpu_model": s.gpu_model,
                "started_at": s.started_at.isoformat() if s.started_at else None,
                "ended_at": s.ended_at.isoformat(),
                "run_microseconds": s.run_microseconds,
                "units": s.units,
                "price_micros_per_hour": s.price_micros_per_hour,
                "charge_minor": s.charge_minor,
                "amount_minor": s.collected_minor,
            }
        )
    for u in await repo.storage_for(user_id, start, end):
        if u.charge_minor or u.byte_seconds:
            lines.append(
                {
                    "kind": "storage",
                    "sampled_at": u.sampled_at.isoformat(),
                    "bytes": u.bytes,
                    "byte_seconds": u.byte_seconds,
                    "amount_minor": u.charge_minor,
                }
            )
    subtotal = sum(x["amount_minor"] for x in lines)
    tax = money.div_half_up(subtotal * settings.tax_rate_bp, money.BASIS_POINTS)
    return {
        "invoice_id": f"INV-{month}-{user_id}",
        "user_id": user_id,
        "month": month,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "currency": settings.currency,
        "lines": lines,
        "subtotal_minor": subtotal,
        "tax_rate_bp": settings.tax_rate_bp,
        "tax_minor": tax,
        "total_minor": subtotal + tax,
    }


async def payout_statement(
    repo: SettlementRepository, settings: BillingSettings, provider_id: str, month: str
) -> dict[str, Any]:
    start, end = month_bounds(month)
    lines = [
        {
            "job_id": s.job_id,
            "attempt": s.attempt,
            "ended_at": s.ended_at.isoformat(),
            "run_microseconds": s.run_microseconds,
            "units": s.units,
            "gross_minor": s.collected_minor,
            "fee_minor": s.fee_minor,
            "earned_minor": s.provider_minor,
        }
        for s in await repo.for_provider(provider_id, start, end)
        if s.collected_minor
    ]
    return {
        "provider_id": provider_id,
        "month": month,
        "currency": settings.currency,
        "platform_fee_bp": settings.platform_fee_bp,
        "lines": lines,
        "gross_minor": sum(x["gross_minor"] for x in lines),
        "fee_minor": sum(x["fee_minor"] for x in lines),
        "earned_minor": sum(x["earned_minor"] for x in lines),
    }


def invoice_pdf(inv: dict[str, Any]) -> bytes:
    cur = inv["currency"]
    text = [
        "DANTE GPU PLATFORM - INVOICE",
        "",
        f"Invoice:  {inv['invoice_id']}",
        f"Customer: {inv['user_id']}",
        f"Period:   {inv['period_start'][:10]} to {inv['period_end'][:10]} (exclusive)",
        "",
        f"{'Item':<44}{'Seconds':>12}{'GPUs':>5}{'Amount':>18}",
        "-" * 79,
    ]
    for line in inv["lines"]:
        if line["kind"] == "job":
            item = f"job {line['job_id']} #{line['attempt']}"
            secs = f"{line['run_microseconds'] / 1e6:.3f}"
            text.append(
                f"{item:<44}{secs:>12}{line['units']:>5}"
                f"{money.format_minor(line['amount_minor'], cur):>18}"
            )
        else:
            item = f"storage to {line['sampled_at'][:16]} ({line['bytes']} B)"
            text.append(f"{item:<61}{money.format_minor(line['amount_minor'], cur):>18}")
    text += [
        "-" * 79,
        f"{'Subtotal':<61}{money.format_minor(inv['subtotal_minor'], cur):>18}",
        f"{'Tax (' + str(inv['tax_rate_bp'] / 100) + ' %)':<61}"
        f"{money.format_minor(inv['tax_minor'], cur):>18}",
        f"{'TOTAL':<61}{money.format_minor(inv['total_minor'], cur):>18}",
    ]
    return pdf.render(text, title=inv["invoice_id"])
