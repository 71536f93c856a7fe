"""Money arithmetic, all in integers. The rounding rules live here and nowhere else.

Units:
- amounts are in *minor units* of the ledger's currency (cents for USD: ``MINOR_PER_MAJOR``);
- prices are in *micros* (millionths of the major unit) per GPU-hour, so a provider price of
  1.234567/h is exact;
- run time is in microseconds, exactly ``ended_at - started_at`` of the attempt.

Charge rule (documented in docs/billing.md): ``charge = round_half_up(run_us x price x GPUs /
(3,600,000,000 us/h x micros per minor unit))``. Fee: ``round_half_up(charge x fee_bp / 10,000)``;
the provider gets ``charge - fee``, so the split never creates or loses a minor unit.
Holds round *up* (a hold must cover the charge it stands for).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MINOR_PER_MAJOR = 100
MICROS_PER_MAJOR = 1_000_000
MICROS_PER_MINOR = MICROS_PER_MAJOR // MINOR_PER_MAJOR  # 10,000
US_PER_HOUR = 3_600_000_000
BASIS_POINTS = 10_000


def div_half_up(num: int, den: int) -> int:
    """``num / den`` rounded half up, for non-negative integers."""
    if num < 0 or den <= 0:
        raise ValueError("div_half_up takes a non-negative numerator and a positive denominator")
    return (2 * num + den) // (2 * den)


def div_ceil(num: int, den: int) -> int:
    return -(-num // den)


def price_to_micros(price_per_hour: float | str | Decimal | None) -> int:
    """A decimal price per hour (as the registry stores it) to integer micros, half up.

    Goes through ``str`` so 0.1 becomes exactly 100,000 micros, not 99,999.99….
    """
    if not price_per_hour:
        return 0
    value = Decimal(str(price_per_hour)) * MICROS_PER_MAJOR
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def charge_minor(run_us: int, price_micros_per_hour: int, units: int) -> int:
    """What an attempt that ran ``run_us`` microseconds on ``units`` GPUs costs."""
    return div_half_up(run_us * price_micros_per_hour * units, US_PER_HOUR * MICROS_PER_MINOR)


def hold_minor(seconds: int, price_micros_per_hour: int, units: int) -> int:
    """The hold for ``seconds`` of run time: rounded up so it covers the charge."""
    return div_ceil(
        seconds * 1_000_000 * price_micros_per_hour * units, US_PER_HOUR * MICROS_PER_MINOR
    )


def pro_rata(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights``, in integers that add up to it exactly
    (largest remainder; ties to the earlier weight)."""
    whole = sum(weights)
    if not whole:
        return [total] + [0] * (len(weights) - 1) if weights else []
    floors = [total * w // whole for w in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in order[: total - sum(floors)]:
        floors[i] += 1
    return floors


def fee_split(charge: int, fee_bp: int) -> tuple[int, int]:
    """``(provider share, platform fee)`` of a charge; they add up to the charge exactly."""
    fee = div_half_up(charge * fee_bp, BASIS_POINTS)
    return charge - fee, fee


def byte_seconds_charge(byte_seconds: int, price_micros_per_gb_hour: int) -> int:
    """Storage: ``byte_seconds`` at a price per GB-hour (10^9 bytes), half up."""
    return div_half_up(byte_seconds * price_micros_per_gb_hour, 10**9 * 3600 * MICROS_PER_MINOR)


def format_minor(amount: int, currency: str) -> str:
    """``12345`` → ``"123.45 USD"`` (for invoices; never parsed back)."""
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), MINOR_PER_MAJOR)
    return f"{sign}{major:,}.{minor:02d} {currency}"
