from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import DEFAULT_PORTS, ServiceSettings


class BillingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DANTE_BILLING_", extra="ignore")

    service_name: str = "billing"
    port: int = DEFAULT_PORTS["billing"]
    database_url: str = "sqlite+aiosqlite:///.dev/db/billing.sqlite"
    currency: str = "USD"
    # the platform's share of every settlement, in basis points (1,000 = 10 %)
    platform_fee_bp: int = 1000
    # tax on invoices, basis points (0: the invoice shows a zero tax line)
    tax_rate_bp: int = 0
    # a hold covers price x GPUs x min(timeout, this); a job without a timeout holds this long
    hold_cap_seconds: int = 3600
    # the one service allowed to ask for holds (its client-credentials token's subject)
    scheduler_subject: str = "service:scheduler"
    # storage: sampled from the storage service every interval, charged per GB-hour
    storage_price_micros_per_gb_hour: int = 0
    storage_sample_seconds: float = 3600.0
    # billing's own client credentials (auth's DANTE_AUTH_SERVICE_CLIENTS), to list storage;
    # empty: storage is not sampled
    service_client_id: str = "billing"
    service_client_secret: str = ""
    # the books are checked (sum to zero, cached balances = entries) this often
    reconcile_interval_seconds: float = 24 * 3600.0
    ack_wait_seconds: float = 30.0
    # Stripe Checkout (docs/billing.md); empty: top-ups by admin grant only
    stripe_secret_key: str = ""
    stripe_webhook_secret: str = ""
    stripe_success_url: str = "http://127.0.0.1:8080/"
    stripe_cancel_url: str = "http://127.0.0.1:8080/"
    # a signed webhook older than this is refused (replay protection, Stripe's default 300 s)
    stripe_tolerance_seconds: int = 300

    secret_defaults: ClassVar[dict[str, object]] = {}
