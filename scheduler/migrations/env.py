from scheduler.models import SchedulerBase
from shared.db import run_alembic_env

run_alembic_env(SchedulerBase.metadata)
