"""Run configuration (Dagster `Config`) for the training assets, and the job's default config."""

from __future__ import annotations

import dagster as dg

from recsys_assets.ml.ease import DEFAULT_LAMBDAS, DEFAULT_MAX_ITEMS
from recsys_assets.ml.list_choice import EaseSettings
from recsys_assets.ml.training import DEFAULT_MIN_USER_RATINGS, SVDParams

_DEFAULTS = SVDParams()


class RatingsConfig(dg.Config):
    """What counts as a usable rating and how much data training needs."""

    rating_min: float = 0.5
    rating_max: float = 5.0
    min_ratings: int = 20
    min_users: int = 2


class DatasetConfig(dg.Config):
    """Reader scale for Surprise; by default taken from the data's min and max (as the seed did)."""

    scale_min: float | None = None
    scale_max: float | None = None


class SVDConfig(dg.Config):
    """Hyperparameters of `surprise.SVD`; defaults are the seed's."""

    n_epochs: int = _DEFAULTS.n_epochs
    lr_all: float = _DEFAULTS.lr_all
    reg_all: float = _DEFAULTS.reg_all
    n_factors: int = _DEFAULTS.n_factors
    random_state: int = _DEFAULTS.random_state

    def params(self) -> SVDParams:
        return SVDParams(
            n_epochs=self.n_epochs,
            lr_all=self.lr_all,
            reg_all=self.reg_all,
            n_factors=self.n_factors,
            random_state=self.random_state,
        )


class CVConfig(SVDConfig):
    """Cross-validation of the same SVD: number of folds and parallel worker processes."""

    n_folds: int = 4
    n_jobs: int = 0  # 0 = one worker per fold, up to the number of CPUs
    # Folds per Dagster step. 0 = automatic: all in one (forked) step when the run executes
    # steps in one process, one step per fold under the multiprocess/Celery executors.
    folds_per_step: int = 0
    # Users with fewer ratings get the most-popular list (cold start); recorded in the manifest
    # and applied by user_predictions and serving.
    min_user_ratings: int = DEFAULT_MIN_USER_RATINGS
    # Ranking metrics (and the blend-weight selection) on a seeded sample of this many users;
    # 0 = every user. Ranking all 59K movies for all 162K users of a 25M-rating catalogue
    # costs minutes per fold; RMSE/MAE are always computed on every held-out rating.
    ranking_users: int = 2_000
    # The EASE ranking model: λ candidates (chosen per fold on validation ratings from the
    # fold's training data) and the most-rated movies it is fitted on (its items x items solve
    # is dense; 0 = every movie). Empty `ease_lambdas`: EASE is not evaluated nor shipped.
    ease_lambdas: list[float] = list(DEFAULT_LAMBDAS)
    ease_max_items: int = DEFAULT_MAX_ITEMS

    def ease_settings(self) -> EaseSettings | None:
        if not self.ease_lambdas:
            return None
        return EaseSettings(tuple(self.ease_lambdas), self.ease_max_items or None)


class ArtifactConfig(dg.Config):
    """Retention: the newest `keep_versions` versions are kept, plus every past champion."""

    keep_versions: int = 10


class PredictionsConfig(dg.Config):
    top_n: int = 50
    block_size: int = 2048


def training_run_config(
    n_epochs: int = _DEFAULTS.n_epochs,
    n_folds: int = 4,
    top_n: int = 50,
    **svd: float | int,
) -> dict:
    """Run config for the whole graph; CV and the final fit always get the same hyperparameters."""
    params = {"n_epochs": n_epochs, **svd}
    return {
        "ops": {
            # cv_report is graph-backed; its config lives on the op that plans the folds.
            "cv_report": {"ops": {"cv_fold_plan": {"config": {**params, "n_folds": n_folds}}}},
            "svd_model": {"config": params},
            "user_predictions": {"config": {"top_n": top_n}},
        }
    }
