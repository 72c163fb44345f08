"""The one place that wires assets, resources, the executor and jobs into a code location.

The executor comes from `RECSYS_EXECUTOR`:

* ``multiprocess`` (default; Dagster's own default): each step in its own process, CV fold
  steps side by side (one per core).
* ``in_process``: every step in the launching process; CV folds are then forked from one step.
* ``celery``: steps are queued on a Celery broker (`RECSYS_CELERY_BROKER_URL`, e.g.
  ``redis://host:6379/0``; results on `RECSYS_CELERY_BACKEND_URL`, default the broker) and
  run by `dagster-celery` workers, on this machine or others (see the README).
"""

from __future__ import annotations

import os

import dagster as dg

from recsys_assets import settings
from recsys_assets.assets import artifact, predictions, ratings, training
from recsys_assets.resources.io_manager import PickleIOManager
from recsys_assets.resources.model_store import ModelStore
from recsys_assets.resources.ratings_db import RatingsDatabase

all_assets = dg.load_assets_from_modules([ratings, training, artifact, predictions])

EXECUTORS = ("multiprocess", "in_process", "celery")


def _database_url() -> str | dg.EnvVar:
    # EnvVar keeps a URL with a password out of the UI; the default is a local SQLite file.
    if os.environ.get("RECSYS_DATABASE_URL"):
        return dg.EnvVar("RECSYS_DATABASE_URL")
    return settings.default_database_url()


def build_resources() -> dict[str, object]:
    return {
        "ratings_db": RatingsDatabase(url=_database_url(), preset=settings.schema_preset()),
        "model_store": ModelStore(root=str(settings.models_dir())),
        "io_manager": PickleIOManager(base_dir=settings.io_manager_base()),
    }


def build_executor(name: str | None = None) -> dg.ExecutorDefinition:
    """The executor named by `name` or `RECSYS_EXECUTOR` (see the module docstring)."""
    name = name or os.environ.get("RECSYS_EXECUTOR") or "multiprocess"
    if name == "multiprocess":
        return dg.multiprocess_executor
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
    """Definitions for the current environment (read at call time, so tests can vary it)."""
    training_job = dg.define_asset_job(
        "training_job",
        selection=dg.AssetSelection.assets(*all_assets),
        description="Read ratings, cross-validate and fit SVD, export the model, score every user.",
        executor_def=build_executor(),
    )
    return dg.Definitions(assets=all_assets, jobs=[training_job], resources=build_resources())


defs = build_defs()


def training_job() -> dg.JobDefinition:
    """The job, rebuilt from the environment: the target of `dg.reconstructable`.

    Executors that run steps in other processes (multiprocess, Celery workers) re-import this
    module there and call this function, so every process sees the same job.
    """
    return build_defs().resolve_job_def("training_job")
