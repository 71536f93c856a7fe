from billing_service.models import BillingBase
from shared.db import run_alembic_env

run_alembic_env(BillingBase.metadata)
