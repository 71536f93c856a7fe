"""``python -m billing_service serve``."""

from __future__ import annotations

import typer

cli = typer.Typer(add_completion=False)


@cli.command()
def serve() -> None:
    """Run the billing service."""
    from billing_service.main import create_app
    from billing_service.settings import BillingSettings
    from shared.app import serve as run
    from shared.app import setup_logging

    settings = BillingSettings()
    setup_logging(settings)
    run(create_app(settings), settings)


@cli.command()
def version() -> None:
    typer.echo("dante billing 0.1.0")


if __name__ == "__main__":
    cli()
