"""``python -m billing_service serve``."""

from __future__ import annotations

from shared.cli import service_cli

cli = service_cli("billing_service", "BillingSettings", "billing")

if __name__ == "__main__":
    cli()
