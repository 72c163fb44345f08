"""`daily_training`: the nightly full retrain (the seed's Celery Beat entry, 02:00; its 20 epochs
are the seed configuration's, the job's default)."""

from __future__ import annotations

import dagster as dg

from recsys_assets.assets.config import training_run_config
from recsys_assets.jobs import training_job
from recsys_assets.settings import Settings

DAILY_TRAINING_CRON = "0 2 * * *"


def build_daily_training_schedule(timezone: str | None = None) -> dg.ScheduleDefinition:
    """The schedule in `timezone` (default: RECSYS_TIMEZONE, else UTC), running by default so
    a fresh deployment trains every night without a click in the UI."""
    if timezone is None:
        timezone = Settings.from_env().timezone
    return dg.ScheduleDefinition(
        name="daily_training",
        job=training_job,
        cron_schedule=DAILY_TRAINING_CRON,
        execution_timezone=timezone,
        # The job's own defaults, exactly as the launchpad and `recsys run` start it.
        run_config=training_run_config(),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Full retrain every night at 02:00 with the job's default run config.",
    )
