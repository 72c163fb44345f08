"""The one place that wires assets, checks, jobs, schedules, sensors, resources and the executor.

Settings come from the environment once per build (`settings.Settings`). The executor comes
from `RECSYS_EXECUTOR`:

* ``multiprocess`` (default; Dagster's own default): each step in its own process, steps
  that do not depend on each other side by side; processes are forked from a forkserver
  that has imported this module once.
* ``in_process``: every step in the launching process.
* ``celery``: steps are queued on a Celery broker (`RECSYS_CELERY_BROKER_URL`, e.g.
  ``redis://host:6379/0``; results on `RECSYS_CELERY_BACKEND_URL`, default the broker) and
  run by `dagster-celery` workers, on this machine or others (see the README).

The same choice sets the `executor_layout` resource, from which the fan-out steps (CV folds,
search candidates) decide how much work one step takes: on one machine one step forks a
worker per core; under Celery one fold or candidate per step.
"""

from __future__ import annotations

import warnings

import dagster as dg

from recsys_assets import checks, jobs
from recsys_assets.assets.ratings import ratings
from recsys_assets.loggers import brief_console_logger
from recsys_assets.resources.executor_layout import ExecutorLayout, ExecutorName
from recsys_assets.resources.io_manager import PickleIOManager
from recsys_assets.resources.model_store import ModelStore
from recsys_assets.resources.ratings_db import RatingsDatabase
from recsys_assets.resources.retrain_policy import RetrainPolicy
from recsys_assets.schedules import build_daily_training_schedule
from recsys_assets.sensors.ratings_db_sensor import build_ratings_db_sensor
from recsys_assets.sensors.retrain_sensor import build_retrain_sensor
from recsys_assets.sensors.run_failure_sensor import build_run_failure_sensor
from recsys_assets.settings import (
    CELERY_BACKEND_ENV,
    CELERY_BROKER_ENV,
    DATABASE_URL_ENV,
    SIGNING_KEY_ENV,
    Settings,
)

# Dagster 1.13 rebuilds a sensor whose target jobs get their resources from the Definitions
# (the retrain sensor's) passing `owners=` itself, then warns that `owners` is beta: a value
# this project never sets. Only that message is ignored.
warnings.filterwarnings(
    "ignore",
    message=r"Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta",
    category=dg.BetaWarning,
)

# The materializable assets (tests materialize exactly these); the external `ratings` table
# is added to the definitions beside them.
all_assets = jobs.training_assets
all_checks = dg.load_asset_checks_from_modules([checks.ratings, checks.gates])

# Launched runs (UI, schedule, sensors) when RECSYS_EXECUTOR is unset.
DEFAULT_EXECUTOR: ExecutorName = "multiprocess"


def build_resources(
    settings: Settings | None = None, executor: ExecutorName | None = None
) -> dict[str, object]:
    """The resources from `settings` (else the environment now); `executor` overrides
    RECSYS_EXECUTOR for `executor_layout` (e.g. ``in_process`` under `dg.materialize`)."""
    settings = settings or Settings.from_env()
    # EnvVar keeps a URL with a password, and the signing key, out of the UI; an EnvVar for an
    # unset variable fails resource init, hence the plain defaults.
    database_url = (
        dg.EnvVar(DATABASE_URL_ENV)
        if settings.database_url_configured
        else settings.default_database_url
    )
    signing_key = dg.EnvVar(SIGNING_KEY_ENV) if settings.signing_key else None
    return {
        "ratings_db": RatingsDatabase(
            url=database_url,
            preset=settings.schema_preset,
            **{f"django_{k}": v for k, v in settings.django_layout.items()},
        ),
        "model_store": ModelStore(root=settings.model_store_root, signing_key=signing_key),
        "io_manager": PickleIOManager(base_dir=settings.io_manager_base),
        "retrain_policy": RetrainPolicy.from_env(settings),
        "executor_layout": ExecutorLayout(
            executor=executor or settings.executor or DEFAULT_EXECUTOR
        ),
    }


def build_executor(
    name: ExecutorName | None = None, settings: Settings | None = None
) -> dg.ExecutorDefinition:
    """The executor named by `name` or RECSYS_EXECUTOR (see the module docstring)."""
    settings = settings or Settings.from_env()
    name = name or settings.executor or DEFAULT_EXECUTOR
    if name == "multiprocess":
        # Step processes forked from a server that has imported this project once, instead
        # of each spawning a fresh interpreter that imports dagster, pandas, surprise and the
        # project again (~3-5 s per step here).
        # The compiled kernels are loaded there too (ml/compiled_preload.py).
        return dg.multiprocess_executor.configured(
            {
                "start_method": {
                    "forkserver": {
                        "preload_modules": [__name__, "recsys_assets.ml.compiled_preload"]
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

        if not settings.celery_broker_url:
            raise ValueError(f"RECSYS_EXECUTOR=celery needs {CELERY_BROKER_ENV}")
        # {"env": ...}: resolved where the run starts, and never shown in the UI.
        backend_var = CELERY_BACKEND_ENV if settings.celery_backend_url else CELERY_BROKER_ENV
        return celery_executor.configured(
            {"broker": {"env": CELERY_BROKER_ENV}, "backend": {"env": backend_var}},
            name="celery",
        )
    raise ValueError(f"executor {name!r} is not one of multiprocess, in_process, celery")


def build_defs(
    settings: Settings | None = None, executor: ExecutorName | None = None
) -> dg.Definitions:
    """Definitions from `settings` (else the environment, read now; the CLI builds per run).

    `executor` overrides RECSYS_EXECUTOR. It is the default of every job that does not set its
    own: `training_job`; the refresh job keeps Dagster's default executor (jobs.py).
    """
    settings = settings or Settings.from_env()
    executor = executor or settings.executor or DEFAULT_EXECUTOR
    return dg.Definitions(
        assets=[ratings, *all_assets],
        asset_checks=all_checks,
        jobs=[jobs.training_job, jobs.refresh_predictions_job],
        schedules=[build_daily_training_schedule(settings.timezone)],
        sensors=[
            build_ratings_db_sensor(settings.sensor_interval_seconds),
            build_retrain_sensor(settings.sensor_interval_seconds),
            build_run_failure_sensor(settings.alert_webhook_url),
        ],
        resources=build_resources(settings, executor),
        executor=build_executor(executor, settings),
        # Dagster's console logger stays the default; `recsys run` selects the brief one.
        loggers={"console": dg.colored_console_logger, "brief_console": brief_console_logger},
    )


defs = build_defs()


def build_training_job(
    executor: ExecutorName | None = None, build_key: str | None = None
) -> dg.JobDefinition:
    """`training_job` resolved from definitions built now, on `executor` (None:
    RECSYS_EXECUTOR): the target of `dg.build_reconstructable_job` (`dg.reconstructable` takes
    only functions without parameters).

    Executors that run steps in other processes (multiprocess, Celery workers) re-import this
    module there and call this function with the same arguments, so every process sees the
    same job. `build_key` is not used here: Dagster keeps the last job it built in a process,
    keyed by these arguments, so a key of its own per run (`cli.run.execute_training`) makes
    a later run in the same process build its job from the environment then (its
    RECSYS_HOME, database), not reuse an earlier run's.
    """
    del build_key
    return build_defs(executor=executor).resolve_job_def(jobs.training_job.name)
