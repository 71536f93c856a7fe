from provider_registry.models import RegistryBase
from shared.db import run_alembic_env

run_alembic_env(RegistryBase.metadata)
