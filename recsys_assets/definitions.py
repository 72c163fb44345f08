"""The one place that wires assets, checks, jobs, schedules, sensors and resources together."""

from __future__ import annotations

import os

import dagster as dg

from recsys_assets import checks, settings
from recsys_assets.assets.ratings import ratings
from recsys_assets.jobs import refresh_predictions_job, training_assets, training_job
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
all_assets = training_assets
all_checks = dg.load_asset_checks_from_modules([checks])


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
        "ratings_db": RatingsDatabase(url=_database_url(), preset=settings.schema_preset()),
        "model_store": ModelStore(root=str(settings.models_dir()), signing_key=_signing_key()),
        "io_manager": PickleIOManager(base_dir=settings.io_manager_base()),
        "retrain_policy": RetrainPolicy.from_env(),
    }


def build_defs() -> dg.Definitions:
    """Definitions with settings read from the environment now (the CLI calls this per run)."""
    return dg.Definitions(
        assets=[ratings, *all_assets],
        asset_checks=all_checks,
        jobs=[training_job, refresh_predictions_job],
        schedules=[build_daily_training_schedule()],
        sensors=[build_ratings_db_sensor(), build_retrain_sensor(), run_failure_alert],
        resources=build_resources(),
    )


defs = build_defs()
