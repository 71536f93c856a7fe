"""``python -m api_gateway serve``."""

from __future__ import annotations

import typer

cli = typer.Typer(add_completion=False)


@cli.command()
def serve() -> None:
    """Run the API gateway."""
    from api_gateway.main import create_app
    from api_gateway.settings import GatewaySettings
    from shared.app import serve as run
    from shared.app import setup_logging

    settings = GatewaySettings()
    setup_logging(settings)
    run(create_app(settings), settings)


@cli.command()
def version() -> None:
    typer.echo("dante api gateway 0.1.0")


if __name__ == "__main__":
    cli()
