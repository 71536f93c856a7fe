"""``python -m provider_registry serve``."""

from __future__ import annotations

import typer

cli = typer.Typer(add_completion=False)


@cli.command()
def serve() -> None:
    """Run the provider registry."""
    from provider_registry.main import create_app
    from provider_registry.settings import RegistrySettings
    from shared.app import serve as run
    from shared.app import setup_logging

    settings = RegistrySettings()
    setup_logging(settings)
    run(create_app(settings), settings)


@cli.command()
def version() -> None:
    typer.echo("dante provider registry 0.1.0")


if __name__ == "__main__":
    cli()
