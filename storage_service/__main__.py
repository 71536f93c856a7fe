"""``python -m storage_service serve``."""

from __future__ import annotations

from shared.cli import service_cli

cli = service_cli("storage_service", "StorageSettings", "storage service")

if __name__ == "__main__":
    cli()
