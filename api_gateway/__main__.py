"""``python -m api_gateway serve``."""

from __future__ import annotations

from shared.cli import service_cli

cli = service_cli("api_gateway", "GatewaySettings", "API gateway")

if __name__ == "__main__":
    cli()
