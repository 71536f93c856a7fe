"""``python -m shared.migrate auth|registry|scheduler``: upgrade one service's database to the
newest schema and exit.

Services also migrate when they start (under an advisory lock, so replicas take turns); this
one-shot step is for rolling upgrades, where the rule is "migrations first": the Kubernetes
migrations Job (deploy/kubernetes) runs it before new pods roll out, so old pods keep serving
on a schema that is a superset of what they know (deploy/README.md, upgrade rules).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# service -> (package, settings class, version table)
SERVICES = {
    "auth": ("auth_service", "AuthSettings", "alembic_version_auth"),
    "registry": ("provider_registry", "RegistrySettings", "alembic_version_registry"),
    "scheduler": ("scheduler", "SchedulerSettings", "alembic_version_scheduler"),
}


def migrate(service: str) -> None:
    package, settings_class, table = SERVICES[service]
    settings = getattr(importlib.import_module(f"{package}.settings"), settings_class)()
    migrations = Path(importlib.import_module(package).__file__ or "").parent / "migrations"
    from shared.db import run_migrations_sync

    run_migrations_sync(migrations, settings.database_url, table)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in SERVICES:
        print(f"usage: python -m shared.migrate {'|'.join(SERVICES)}", file=sys.stderr)
        return 2
    migrate(argv[0])
    print(f"{argv[0]}: database at the newest schema")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
