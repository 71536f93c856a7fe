"""``python -m scheduler serve``."""

from __future__ import annotations

from shared.cli import service_cli

cli = service_cli("scheduler", "SchedulerSettings", "scheduler")

if __name__ == "__main__":
    cli()
