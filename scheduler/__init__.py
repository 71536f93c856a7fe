"""Scheduler: the job store, intake, placement, dispatch, status intake, the jobs API."""
