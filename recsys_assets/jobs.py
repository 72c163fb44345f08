"""The project's jobs: full training over the asset graph, and the incremental refresh."""

from __future__ import annotations

import dagster as dg

from recsys_assets.assets import (
    artifact,
    evaluation_sample,
    predictions,
    ranking_model,
    ratings,
    training,
    tuning,
)
from recsys_assets.ops.refresh_predictions import refresh_user_predictions

# The run tag the instance's run queue limits to one at a time (deploy/dagster.yaml); defined
# with the rest of the one-training-at-a-time rules.
from recsys_assets.run_lock import JOB_TAG, TRAINING_JOB, TRAINING_TAGS

__all__ = ["JOB_TAG", "REFRESH_TAGS", "TRAINING_TAGS", "refresh_predictions_job", "training_job"]

# The materializable assets (the external `ratings` table is declared separately).
training_assets = dg.load_assets_from_modules(
    [ratings, evaluation_sample, tuning, training, ranking_model, artifact, predictions]
)

REFRESH_TAGS = {JOB_TAG: "refresh"}

training_job = dg.define_asset_job(
    TRAINING_JOB,
    selection=dg.AssetSelection.assets(*training_assets),
    description="Read ratings, search the SVD's hyperparameters, cross-validate and fit it, "
    "export the model, promote it if it passes the gates, rank every user's top-N with the "
    "champion (most-popular while there is none).",
    tags=TRAINING_TAGS,
)


@dg.job(
    tags=REFRESH_TAGS,
    # Set here so the definitions' executor (RECSYS_EXECUTOR, e.g. Celery) is not applied: one
    # step, run as before.
    executor_def=dg.multi_or_in_process_executor,
    description="Recompute user_predictions for the given users with the current `latest` "
    "model, without retraining.",
)
def refresh_predictions_job() -> None:
    refresh_user_predictions()
