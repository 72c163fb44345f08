"""Run configuration (Dagster `Config`) for the training assets, and the job's default config."""

from __future__ import annotations

from typing import Literal

import dagster as dg

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
    # How the SVD is fitted: "compiled" (numba, ml/svd_sgd.py) or "surprise" (SVD.fit). Same
    # model bit for bit; "surprise" checks that in a run. The manifest records which one.
    engine: Literal["compiled", "surprise"] = "compiled"

    def params(self) -> SVDParams:
        return SVDParams(
            n_epochs=self.n_epochs,
            lr_all=self.lr_all,
            reg_all=self.reg_all,
            n_factors=self.n_factors,
            random_state=self.random_state,
            engine=self.engine,
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
    **svd: float | int | str,
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
