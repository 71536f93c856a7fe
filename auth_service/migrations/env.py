from auth_service.models import AuthBase
from shared.db import run_alembic_env

run_alembic_env(AuthBase.metadata)
