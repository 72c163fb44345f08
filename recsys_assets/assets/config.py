"""Run configuration (Dagster `Config`) for the training assets, and the job's default config."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from recsys_assets.choices import Engine, Tuning
from recsys_assets.ml.artifacts.store import DEFAULT_KEEP_VERSIONS
from recsys_assets.ml.ease import DEFAULT_LAMBDAS, DEFAULT_MAX_ITEMS, DEFAULT_MIN_ITEM_RATINGS
from recsys_assets.ml.selection.cross_validation import CVSettings
from recsys_assets.ml.selection.list_choice import EaseSettings
from recsys_assets.ml.selection.sample import DEFAULT_MAX_RATINGS
from recsys_assets.ml.selection.search import DEFAULT_PARAM_GRID
from recsys_assets.ml.training import DEFAULT_MIN_USER_RATINGS, SVDParams
from recsys_assets.settings import Settings

_DEFAULTS = SVDParams()


class RatingsConfig(dg.Config):
    """What counts as a usable rating and how much data training needs.

    Unset fields take the environment's values (`Settings`), so the UI, the schedule, the
    sensors and `recsys run` clean alike unless a run says otherwise.
    """

    rating_min: float | None = Field(
        default=None, description="Lowest valid rating; unset: RECSYS_RATING_SCALE's (0.5)"
    )
    rating_max: float | None = Field(
        default=None, description="Highest valid rating; unset: RECSYS_RATING_SCALE's (5)"
    )
    max_invalid_fraction: float | None = Field(
        default=None,
        description="Largest share of rows dropped as unusable (bad ids, non-numeric or "
        "out-of-scale ratings) that still trains; more fails the run. Unset: "
        "RECSYS_MAX_INVALID_FRACTION (0.05)",
    )
    min_ratings: int = 20
    min_users: int = 2

    def rating_scale(self, settings: Settings) -> tuple[float, float]:
        low, high = settings.rating_scale
        return (
            low if self.rating_min is None else self.rating_min,
            high if self.rating_max is None else self.rating_max,
        )

    def invalid_limit(self, settings: Settings) -> float:
        if self.max_invalid_fraction is None:
            return settings.max_invalid_fraction
        return self.max_invalid_fraction


class DatasetConfig(dg.Config):
    """Reader scale for Surprise; by default taken from the data's min and max (as the seed did)."""

    scale_min: float | None = None
    scale_max: float | None = None


class EvaluationConfig(dg.Config):
    """The evaluation budget: the search, the CV folds and the list choice run on at most
    `max_ratings` ratings, a seeded sample of whole users; `svd_model` and `ranking_model`
    always fit every rating. Below the cap nothing is sampled."""

    max_ratings: int = Field(
        default=DEFAULT_MAX_RATINGS,
        description="Most ratings evaluated (whole users, seeded); 0 = every rating",
    )
    seed: int = 42


class SVDConfig(dg.Config):
    """Hyperparameters of `surprise.SVD`; defaults are the seed's."""

    n_epochs: int = _DEFAULTS.n_epochs
    lr_all: float = _DEFAULTS.lr_all
    reg_all: float = _DEFAULTS.reg_all
    n_factors: int = _DEFAULTS.n_factors
    random_state: int = _DEFAULTS.random_state
    # How the SVD is fitted: "compiled" (numba, ml/svd_sgd.py) or "surprise" (SVD.fit). Same
    # model bit for bit; "surprise" checks that in a run. The manifest records which one.
    engine: Engine = _DEFAULTS.engine

    def params(self) -> SVDParams:
        return SVDParams(
            n_epochs=self.n_epochs,
            lr_all=self.lr_all,
            reg_all=self.reg_all,
            n_factors=self.n_factors,
            random_state=self.random_state,
            engine=self.engine,
        )


class TuningConfig(SVDConfig):
    """How `svd_hyperparameters` picks the SVD's hyperparameters (see `ml.selection.search`).

    The SVDConfig fields are the seed configuration: with `tuning="fixed"` it is used as is
    (no search, no validation split: the run is the same as before tuning existed); with
    `"search"` it is one of the candidates, always evaluated on the whole evaluation sample.
    """

    tuning: Tuning = "search"
    # Values tried per hyperparameter (Surprise's GridSearchCV name); n_iter points are
    # sampled from their product (RandomizedSearchCV's name), besides the seed's and the
    # champion's configurations.
    param_grid: dict[str, list[float]] = Field(
        default_factory=lambda: {k: [float(v) for v in vs] for k, vs in DEFAULT_PARAM_GRID.items()}
    )
    n_iter: int = 16
    # Budget in seconds from the start of the search (0 = none): once spent, no further
    # sampled configuration starts; the seed's and the champion's still run on the whole sample.
    max_seconds: float = 0.0
    # Successive halving: each rung keeps the best 1/eta of the sampled candidates; rungs fit
    # on eta^-2, eta^-1 and all of the users, but never on fewer than min_rung_ratings ratings.
    eta: int = 4
    min_rung_ratings: int = 20_000
    # V: this fraction of the ratings of each user with at least validation_min_user_ratings.
    validation_fraction: float = 0.1
    validation_min_user_ratings: int = 10
    # Candidates per Dagster step; 0 = automatic (one candidate per step under Celery, else
    # a rung in one step that forks a worker per core).
    candidates_per_step: int = 0
    n_jobs: int = 0  # worker processes of a step with several candidates; 0 = CPUs


class CVConfig(dg.Config):
    """Cross-validation of the chosen SVD: number of folds and parallel worker processes."""

    n_folds: int = CVSettings.n_folds
    n_jobs: int = 0  # 0 = one worker per fold, up to the number of CPUs
    # Folds per Dagster step. 0 = automatic: one step per fold under Celery, else all in
    # one step that forks a worker per fold (up to the CPUs).
    folds_per_step: int = 0
    # Users with fewer ratings get the most-popular list (cold start); recorded in the manifest
    # and applied by user_predictions and serving.
    min_user_ratings: int = DEFAULT_MIN_USER_RATINGS
    # Ranking metrics (and the blend-weight selection) on a seeded sample of this many users;
    # 0 = every user. Ranking all 59K movies for all 162K users of a 25M-rating catalogue
    # costs minutes per fold; RMSE/MAE are always computed on every held-out rating.
    ranking_users: int = 2_000
    # The EASE ranking model: λ candidates (chosen on validation ratings from training data)
    # and the movies it is fitted on: the `ease_max_items` most-rated (its items x items solve
    # is dense; 0 = no cap) of those with at least `ease_min_item_ratings` ratings. Empty
    # `ease_lambdas`: EASE is not evaluated nor shipped.
    ease_lambdas: list[float] = list(DEFAULT_LAMBDAS)
    ease_max_items: int = DEFAULT_MAX_ITEMS
    ease_min_item_ratings: int = DEFAULT_MIN_ITEM_RATINGS

    def ease_settings(self) -> EaseSettings | None:
        if not self.ease_lambdas:
            return None
        return EaseSettings(
            tuple(self.ease_lambdas), self.ease_max_items or None, self.ease_min_item_ratings
        )


class ArtifactConfig(dg.Config):
    """Retention: the newest `keep_versions` versions are kept, plus every past champion."""

    keep_versions: int = DEFAULT_KEEP_VERSIONS


class PredictionsConfig(dg.Config):
    top_n: int = Field(default=50, description="Suggestions per user.")
    block_size: int = 2048


def training_run_config(
    n_epochs: int | None = None,
    n_folds: int | None = None,
    top_n: int | None = None,
    tuning: Tuning | None = None,
    eval_max_ratings: int | None = None,
    **hyper: float | int | str,
) -> dict:
    """Run config for the whole graph; what is None keeps the Config classes' default. The
    hyperparameters have one home, the `svd_hyperparameters` asset's config (`n_epochs` and
    `**hyper`: the seed configuration, or with `tuning="fixed"` the one used); CV and the
    final fit both take the configuration it chose."""
    search = _given(tuning=tuning, n_epochs=n_epochs, **hyper)
    predictions = _given(top_n=top_n)
    ops = {
        "svd_hyperparameters": {"config": search},
        "cv_report": {"config": _given(n_folds=n_folds)},
        "fallback_predictions": {"config": predictions},
        "user_predictions": {"config": dict(predictions)},
    }
    if eval_max_ratings is not None:
        ops["evaluation_sample"] = {"config": {"max_ratings": eval_max_ratings}}
    return {"ops": ops}


def _given(**values: object) -> dict:
    return {k: v for k, v in values.items() if v is not None}
