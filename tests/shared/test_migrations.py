"""Every service's schema comes from its own alembic migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from shared.db import make_engine, run_migrations

ROOT = Path(__file__).resolve().parents[2]

SERVICES = {
    "auth_service": (
        "alembic_version_auth",
        {"users", "refresh_tokens", "api_keys", "revocations", "login_attempts"},
    ),
    "provider_registry": (
        "alembic_version_registry",
        {"providers", "gpus", "provider_event_outbox"},
    ),
    "scheduler": (
        "alembic_version_scheduler",
        {
            "jobs",
            "job_events",
            "provider_views",
            "job_tags",
            "usage_records",
            "usage_outbox",
            "owner_policies",
            "owner_usage",
            "attempt_usage",
        },
    ),
    "billing_service": (
        "alembic_version_billing",
        {
            "accounts",
            "ledger_txns",
            "ledger_entries",
            "holds",
            "settlements",
            "storage_usage",
            "payment_events",
        },
    ),
}


@pytest.mark.parametrize("package", sorted(SERVICES))
async def test_migrations_build_the_models_schema(db_url: str, package: str) -> None:
    version_table, tables = SERVICES[package]
    await run_migrations(ROOT / package / "migrations", db_url, version_table)
    await run_migrations(ROOT / package / "migrations", db_url, version_table)  # idempotent
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            names = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
            version = (
                await conn.execute(sa.text(f"SELECT version_num FROM {version_table}"))
            ).all()
    finally:
        await engine.dispose()
    assert tables | {version_table} == names
    assert len(version) == 1


@pytest.mark.parametrize("package", sorted(SERVICES))
def test_models_and_migrations_agree(package: str, tmp_path: Path) -> None:
    """Autogenerate against a migrated database finds nothing to add: no drift."""
    import importlib

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    version_table, _ = SERVICES[package]
    url = f"sqlite+aiosqlite:///{tmp_path}/drift.sqlite"
    import asyncio

    asyncio.run(run_migrations(ROOT / package / "migrations", url, version_table))
    models = importlib.import_module(f"{package}.models")
    base = next(v for k, v in vars(models).items() if k.endswith("Base") and k != "Base")
    engine = sa.create_engine(f"sqlite:///{tmp_path}/drift.sqlite")
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": version_table})
        diff = [d for d in compare_metadata(ctx, base.metadata) if d[0] != "remove_table"]
    engine.dispose()
    assert diff == []
