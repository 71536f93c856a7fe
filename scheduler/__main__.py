"""``python -m scheduler serve``; ``replay-dead-letters <consumer>`` for operators."""

from __future__ import annotations

import typer

from shared.cli import service_cli

cli = service_cli("scheduler", "SchedulerSettings", "scheduler")


@cli.command("replay-dead-letters")
def replay_dead_letters(
    consumer: str = typer.Argument(
        ..., help="scheduler-intake, scheduler-status or scheduler-providers"
    ),
) -> None:
    """Put a consumer's dead letters back on their subjects now (once the cause is fixed)."""
    import asyncio

    from scheduler.settings import SchedulerSettings
    from shared.nats import close_nats, connect
    from shared.nats import replay_dead_letters as replay

    async def run() -> int:
        nc = await connect(SchedulerSettings().nats_url, "scheduler-replay")
        try:
            return await replay(nc.jetstream(), consumer)
        finally:
            await close_nats(nc)

    typer.echo(f"replayed {asyncio.run(run())} dead letters of {consumer}")


if __name__ == "__main__":
    cli()
