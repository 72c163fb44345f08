"""The one place that wires assets, resources and jobs into a Dagster code location."""

from __future__ import annotations

import os

import dagster as dg

from recsys_assets import checks, settings
from recsys_assets.assets import artifact, predictions, ratings, training
from recsys_assets.resources.io_manager import PickleIOManager
from recsys_assets.resources.model_store import ModelStore
from recsys_assets.resources.ratings_db import RatingsDatabase

all_assets = dg.load_assets_from_modules([ratings, training, artifact, predictions])
all_checks = dg.load_asset_checks_from_modules([checks])

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets(*all_assets),
    description="Read ratings, cross-validate and fit SVD, export the model, promote it if it "
    "passes the gates, rank every user's top-N with the champion.",
)


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
    }


def build_defs() -> dg.Definitions:
    """Definitions with resources read from the environment now (the CLI calls this per run)."""
    return dg.Definitions(
        assets=all_assets,
        asset_checks=all_checks,
        jobs=[training_job],
        resources=build_resources(),
    )


defs = build_defs()
