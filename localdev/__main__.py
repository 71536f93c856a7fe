"""``python -m localdev`` (what ``make dev`` runs): the platform in the foreground."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import typer

from localdev.cluster import ClusterConfig, DataDirInUse, LocalCluster

cli = typer.Typer(add_completion=False)


def banner(cluster: LocalCluster, data_dir: Path) -> str:
    """What a newcomer needs, once: where to point a browser and curl, and how to sign in.
    The other ports are internal (the gateway routes to them)."""
    from auth_service.settings import DEV_ADMIN_PASSWORD

    user = os.environ.get("DANTE_AUTH_ADMIN_USERNAME", "admin")
    if os.environ.get("DANTE_AUTH_ADMIN_PASSWORD"):
        password = "the DANTE_AUTH_ADMIN_PASSWORD this data dir was first started with"
    else:
        password = DEV_ADMIN_PASSWORD
    internal = ", ".join(f"{k} {v}" for k, v in cluster.ports.items() if k != "gateway")
    return (
        f"\nDante is up.\n"
        f"  Console and API: {cluster.gateway_url}/   (GW={cluster.gateway_url} for the README)\n"
        f"  Admin login: {user} / {password}   (dev only; made at the first start)\n"
        f"  Data in {data_dir.resolve()}; NATS {cluster.nats_url}; internal ports: {internal}\n"
        "  Ctrl-C stops everything (running jobs finish first).\n"
    )


@cli.command()
def up(
    data_dir: Path = typer.Option(Path(".dev"), help="where every service keeps its data"),
    daemons: int = typer.Option(1, min=1, help="provider daemons to run (each its own provider)"),
    heartbeat_ttl: float | None = typer.Option(
        None, help="seconds without a heartbeat before a provider is offline (default 30)"
    ),
    billing: bool = typer.Option(
        True, help="hold funds before dispatch: a job whose owner cannot pay waits"
    ),
    default_ports: bool = typer.Option(
        True, help="the documented ports (gateway 8080, …) where free; --no-default-ports: any"
    ),
) -> None:
    """Bring the whole platform up; Ctrl-C (or SIGTERM) stops every process it started."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cluster = LocalCluster(
        ClusterConfig(
            data_dir=data_dir,
            daemons=daemons,
            heartbeat_ttl=heartbeat_ttl,
            billing_holds=billing,
            prefer_default_ports=default_ports,
        )
    )
    try:
        cluster.start()
    except DataDirInUse as exc:
        typer.echo(f"dante: {exc}", err=True)
        raise typer.Exit(1) from exc
    except Exception as exc:
        typer.echo(f"dante: start-up failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(banner(cluster, data_dir), err=True)
    typer.echo(cluster.gateway_url)
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            dead = [p.name for p in cluster.procs if p.popen.poll() is not None]
            if dead:
                typer.echo(f"dante: {', '.join(dead)} exited; stopping", err=True)
                break
        typer.echo(
            f"dante: stopping; the daemon first (running jobs get up to "
            f"{cluster.daemon_grace:.0f} s to finish), then the services",
            err=True,
        )
    finally:
        cluster.stop()
        typer.echo("dante: stopped", err=True)


@cli.command()
def clean(data_dir: Path = typer.Option(Path(".dev"), help="the data dir to remove")) -> None:
    """Forget everything `up` stored (accounts, jobs, keys, objects)."""
    import shutil

    shutil.rmtree(data_dir, ignore_errors=True)
    typer.echo(f"removed {data_dir}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
