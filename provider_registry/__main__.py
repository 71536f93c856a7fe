"""``python -m provider_registry serve``."""

from __future__ import annotations

from shared.cli import service_cli

cli = service_cli("provider_registry", "RegistrySettings", "provider registry")

if __name__ == "__main__":
    cli()
