"""The one place that wires assets, checks, jobs, schedules, sensors, resources and the executor.

The executor comes from `RECSYS_EXECUTOR`:

* ``multiprocess`` (default; Dagster's own default): each step in its own process, CV fold
  steps side by side (one per core); processes are forked from a forkserver that has
  imported this module once.
* ``in_process``: every step in the launching process; CV folds are then forked from one step.
* ``celery``: steps are queued on a Celery broker (`RECSYS_CELERY_BROKER_URL`, e.g.
  ``redis://host:6379/0``; results on `RECSYS_CELERY_BACKEND_URL`, default the broker) and
  run by `dagster-celery` workers, on this machine or others (see the README).
"""

from __future__ import annotations

import os

import dagster as dg

from recsys_assets import checks, jobs, settings
from recsys_assets.assets.ratings import ratings
from recsys_assets.loggers import brief_console_logger
from recsys_assets.resources.io_manager import PickleIOManager
from recsys_assets.resources.model_store import ModelStore
from recsys_assets.resources.ratings_db import RatingsDatabase
from recsys_assets.resources.retrain_policy import RetrainPolicy
from recsys_assets.schedules import build_daily_training_schedule
from recsys_assets.sensors.ratings_db_sensor import build_ratings_db_sensor
from recsys_assets.sensors.retrain_sensor import build_retrain_sensor
from recsys_assets.sensors.run_failure_sensor import run_failure_alert

# The materializable assets (tests materialize exactly these); the external `ratings` table
# is added to the definitions beside them.
all_assets = jobs.training_assets
all_checks = dg.load_asset_checks_from_modules([checks])

EXECUTORS = ("multiprocess", "in_process", "celery")


def _database_url() -> str | dg.EnvVar:
    # EnvVar keeps a URL with a password out of the UI; the default is a local SQLite file.
    if os.environ.get("RECSYS_DATABASE_URL"):
        return dg.EnvVar("RECSYS_DATABASE_URL")
    return settings.default_database_url()


def _signing_key() -> dg.EnvVar | None:
    # Only when set: an EnvVar for an unset variable fails resource init.
    return dg.EnvVar(settings.SIGNING_KEY_ENV) if os.environ.get(settings.SIGNING_KEY_ENV) else None


def build_resources() -> dict[str, object]:
    return {
        "ratings_db": RatingsDatabase(
            url=_database_url(),
            preset=settings.schema_preset(),
            **{f"django_{k}": v for k, v in settings.django_layout().items()},
        ),
        "model_store": ModelStore(root=settings.model_store_root(), signing_key=_signing_key()),
        "io_manager": PickleIOManager(base_dir=settings.io_manager_base()),
        "retrain_policy": RetrainPolicy.from_env(),
    }


def build_executor(name: str | None = None) -> dg.ExecutorDefinition:
    """The executor named by `name` or `RECSYS_EXECUTOR` (see the module docstring)."""
    name = name or os.environ.get("RECSYS_EXECUTOR") or "multiprocess"
    if name == "multiprocess":
        # Step processes forked from a server that has imported this project once, instead
        # of each spawning a fresh interpreter that imports dagster, pandas, surprise and the
        # project again (~3-5 s per step here).
        # The compiled SVD fit is loaded there too (ml/svd_sgd_preload.py).
        return dg.multiprocess_executor.configured(
            {
                "start_method": {
                    "forkserver": {
                        "preload_modules": [__name__, "recsys_assets.ml.svd_sgd_preload"]
                    }
                }
            },
            name="multiprocess",
        )
    if name == "in_process":
        return dg.in_process_executor
    if name == "celery":
        # Imported only here: the celery extra is optional for single-machine deployments.
        from dagster_celery import celery_executor

        if not os.environ.get("RECSYS_CELERY_BROKER_URL"):
            raise ValueError("RECSYS_EXECUTOR=celery needs RECSYS_CELERY_BROKER_URL")
        # {"env": ...}: resolved where the run starts, and never shown in the UI.
        backend_var = (
            "RECSYS_CELERY_BACKEND_URL"
            if os.environ.get("RECSYS_CELERY_BACKEND_URL")
            else "RECSYS_CELERY_BROKER_URL"
        )
        return celery_executor.configured(
            {"broker": {"env": "RECSYS_CELERY_BROKER_URL"}, "backend": {"env": backend_var}},
            name="celery",
        )
    raise ValueError(f"RECSYS_EXECUTOR={name!r} is not one of {', '.join(EXECUTORS)}")


def build_defs() -> dg.Definitions:
    """Definitions with settings read from the environment now (the CLI calls this per run).

    The executor (`build_executor`) is the default of every job that does not set its own:
    `training_job`; the refresh job keeps Dagster's default executor (jobs.py).
    """
    return dg.Definitions(
        assets=[ratings, *all_assets],
        asset_checks=all_checks,
        jobs=[jobs.training_job, jobs.refresh_predictions_job],
        schedules=[build_daily_training_schedule()],
        sensors=[build_ratings_db_sensor(), build_retrain_sensor(), run_failure_alert],
        resources=build_resources(),
        executor=build_executor(),
        # Dagster's console logger stays the default; `recsys run` selects the brief one.
        loggers={"console": dg.colored_console_logger, "brief_console": brief_console_logger},
    )


defs = build_defs()


def training_job() -> dg.JobDefinition:
    """The job, rebuilt from the environment: the target of `dg.reconstructable`.

    Executors that run steps in other processes (multiprocess, Celery workers) re-import this
    module there and call this function, so every process sees the same job.
    """
    return build_defs().resolve_job_def("training_job")
