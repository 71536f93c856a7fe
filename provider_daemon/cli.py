"""``dante-provider``: run the daemon, show the GPUs, check the set-up."""

from __future__ import annotations

import asyncio
import json
import signal

import typer

from provider_daemon.settings import DaemonSettings

app = typer.Typer(
    add_completion=False, help="Dante provider daemon", pretty_exceptions_enable=False
)


@app.command()
def run() -> None:
    """Register this host and run tasks until SIGTERM/SIGINT (which drains first)."""
    from provider_daemon.agent import run as run_daemon
    from provider_daemon.client import CredentialsRejected
    from shared.app import setup_logging
    from shared.loops import Stopped

    settings = DaemonSettings()
    setup_logging(settings)
    if not settings.api_key:
        typer.echo("DANTE_DAEMON_API_KEY is not set: create a key (see deploy/README.md)", err=True)
        raise typer.Exit(2)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run_daemon(settings, stop)
        except Stopped:
            pass  # stopped before it ever got going: nothing to drain
        except CredentialsRejected as exc:
            typer.echo(f"dante-provider: {exc}", err=True)
            raise typer.Exit(3) from exc

    asyncio.run(main())


@app.command()
def gpus(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """The NVML inventory of this host."""
    from rich.console import Console
    from rich.table import Table

    from provider_daemon.inventory import Nvml, collect
    from shared.app import setup_logging

    setup_logging(DaemonSettings())  # log lines go to stderr: stdout is the table or the JSON
    nvml = Nvml()
    try:
        inv = collect(nvml)
    finally:
        nvml.close()
    if as_json:
        typer.echo(json.dumps(inv.as_json(), indent=2))
        return
    table = Table(title=f"driver {inv.driver_version or '-'}  CUDA {inv.cuda_version or '-'}")
    for col in ("index", "name", "memory MiB", "compute", "power W", "healthy", "uuid"):
        table.add_column(col)
    for g in inv.gpus:
        table.add_row(
            str(g.index),
            g.name,
            str(g.memory_total_mb),
            g.compute_capability or "-",
            str(g.power_limit_w or "-"),
            "yes" if g.healthy else "NO",
            g.uuid,
        )
    console = Console()
    console.print(table if inv.gpus else "no NVIDIA GPU found: this host offers CPU only")
    console.print(f"CPUs: {inv.cpu_count}  memory: {inv.memory_mb} MiB")


@app.command()
def check(
    require_gpu: bool = typer.Option(False, "--require-gpu", help="no NVIDIA GPU is a failure"),
) -> None:
    """NVML, state dir, NATS, gateway, credentials (and Docker): exit code 1 if any fails."""
    from rich.console import Console
    from rich.table import Table

    from provider_daemon.checks import FAIL, WARN, run_checks
    from shared.app import setup_logging

    settings = DaemonSettings()
    setup_logging(settings)
    results = asyncio.run(run_checks(settings, require_gpu))
    table = Table(title="dante-provider check")
    for col in ("check", "status", "detail"):
        table.add_column(col)
    colour = {FAIL: "red", WARN: "yellow"}
    for c in results:
        style = colour.get(c.status, "green")
        table.add_row(c.name, f"[{style}]{c.status}[/{style}]", c.detail)
    Console(width=200).print(table)
    if any(c.status == FAIL for c in results):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
