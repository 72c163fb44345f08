"""When new ratings justify a full retrain: the retrain sensor's configuration, as a resource.

Set in `definitions.py` (and visible on the UI's resource page) from the settings: the
environment variables RECSYS_RETRAIN_MIN_NEW_RATINGS, RECSYS_RETRAIN_MIN_NEW_FRACTION and
RECSYS_RETRAIN_MIN_INTERVAL_SECONDS override the defaults.
"""

from __future__ import annotations

import math

import dagster as dg
from pydantic import Field

from recsys_assets.assets.config import SVDConfig
from recsys_assets.settings import Settings


class RetrainPolicy(dg.ConfigurableResource):
    """Retrain when enough ratings changed since the last successful training."""

    min_new_ratings: int = Field(
        default=1000,
        ge=1,
        description="Retrain once this many ratings are new since the last successful training.",
    )
    min_new_fraction: float = Field(
        default=0.0,
        ge=0.0,
        description="Or once new ratings reach this fraction of the ratings the current model "
        "was trained on (0 = off). The smaller of the two thresholds wins.",
    )
    min_interval_seconds: int = Field(
        default=3600,
        ge=0,
        description="At least this long between the starts of two training runs.",
    )
    n_epochs: int = Field(
        default=SVDConfig().n_epochs, ge=1, description="SVD epochs of sensor-started runs."
    )
    refresh_predictions: bool = Field(
        default=True,
        description="Below the threshold, rescore just the users with new ratings "
        "(refresh_predictions_job) with the current model.",
    )

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> RetrainPolicy:
        """The policy the environment sets (`settings`, else read now)."""
        settings = settings or Settings.from_env()
        return cls(
            min_new_ratings=settings.retrain_min_new_ratings,
            min_new_fraction=settings.retrain_min_new_fraction,
            min_interval_seconds=settings.retrain_min_interval_seconds,
        )

    def threshold(self, trained_ratings: int | None) -> int:
        """New ratings needed to retrain, given the size of the current model's training set."""
        count = self.min_new_ratings
        if self.min_new_fraction > 0 and trained_ratings:
            count = min(count, max(1, math.ceil(self.min_new_fraction * trained_ratings)))
        return count
