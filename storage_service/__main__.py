"""``python -m storage_service serve``."""

from __future__ import annotations

import typer

cli = typer.Typer(add_completion=False, no_args_is_help=False)


@cli.command()
def serve() -> None:
    """Run the storage service."""
    from shared.app import serve as run
    from shared.app import setup_logging
    from storage_service.main import create_app
    from storage_service.settings import StorageSettings

    settings = StorageSettings()
    setup_logging(settings)
    run(create_app(settings), settings)


@cli.callback()
def main() -> None:
    """Dante storage service."""


if __name__ == "__main__":
    cli()
