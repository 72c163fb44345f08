"""Which list users get: the SVD blend or EASE, chosen on validation ratings only.

An SVD and EASE models (one per λ) fitted on training ratings are ranked for validation
ratings held out of that training data: the blend's weights and EASE's λ are each picked by
validation NDCG@10, and the list with the higher validation NDCG is shipped. The test folds
of `cv_report` only measure the result. Two sources of validation ratings:

* with the hyperparameter search on, its validation set V (in every CV fold's training
  part, never a test fold): one choice for every fold and for the shipped model, made with
  the search's own fit of the chosen configuration on every rating but V
  (``choose_on_holdout``), so CV needs no inner fits;
* with fixed hyperparameters (no V), per CV fold: inner models fitted on part of the fold's
  training ratings, validated on the rest (``cross_validation._select_shared`` / ``_select_own``);
  the model trained on every rating ships the list whose validation NDCG, summed over the
  folds, is higher (``final_choice``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import pandas as pd

from recsys_assets.ml.arrays import Ratings
from recsys_assets.ml.ease import (
    DEFAULT_LAMBDAS,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MIN_ITEM_RATINGS,
    EASEModel,
    fit_ease,
    map_ease_path,
)
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.ranking.policy import SOURCE_EASE, SOURCE_SVD, RankingPolicy
from recsys_assets.ml.selection import evaluation

__all__ = [
    "DEFAULT_EASE",
    "EaseSettings",
    "ListChoice",
    "choose_lists",
    "choose_on_holdout",
    "final_choice",
    "final_ranking_choice",
    "final_ranking_policy",
]

R = TypeVar("R")


@dataclass(frozen=True)
class EaseSettings:
    """EASE's validation grid and which movies it is fitted on (``CVConfig.ease_lambdas``,
    ``ease_max_items``, ``ease_min_item_ratings``)."""

    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    max_items: int | None = DEFAULT_MAX_ITEMS
    min_item_ratings: int = DEFAULT_MIN_ITEM_RATINGS
    # The evaluation's solves (λ grid, the folds' EASE) in float32: twice as fast at 10K
    # movies, with the same validation NDCG to 1e-4 (docs/benchmarks.md, bench_ease_dtype.py);
    # `ranking_model`, the shipped one, solves in float64.
    dtype: type = np.float32

    def __post_init__(self) -> None:
        if not self.lambdas or min(self.lambdas) <= 0:
            raise ValueError(f"ease_lambdas must be positive values, got {list(self.lambdas)}")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"ease_max_items must be >= 1, got {self.max_items}")
        if self.min_item_ratings < 1:
            raise ValueError(f"ease_min_item_ratings must be >= 1, got {self.min_item_ratings}")

    def fit(self, users: np.ndarray, movies: np.ndarray, lam: float) -> EASEModel:
        """EASE with ``lam`` on these settings' movies (what every fit of the pipeline uses)."""
        return fit_ease(
            users, movies, lam, self.max_items, self.dtype, min_ratings=self.min_item_ratings
        )

    def map_path(
        self,
        users: np.ndarray,
        movies: np.ndarray,
        use: Callable[[EASEModel], R],
        lambdas: Sequence[float] | None = None,
    ) -> list[R]:
        """``use`` of the EASE of each λ of ``lambdas`` (default: the grid), on these settings'
        movies, run where that λ was solved (``ease.map_ease_path``)."""
        return map_ease_path(
            users,
            movies,
            tuple(self.lambdas if lambdas is None else lambdas),
            use,
            self.max_items,
            self.dtype,
            min_ratings=self.min_item_ratings,
        )


DEFAULT_EASE = EaseSettings()


@dataclass(frozen=True)
class ListChoice:
    """One fold's choices, made on validation: blend weights, EASE's λ and the shipped list."""

    policy: RankingPolicy  # the blend's weights (ranker 'svd')
    blend_ndcg: float  # validation NDCG@10 of the chosen blend
    ease_lambda: float | None = None
    ease_ndcg: float = float("nan")  # validation NDCG@10 of EASE with that λ
    tried: list[dict] = field(default_factory=list, compare=False)

    @property
    def ranker(self) -> str:
        """'ease' when EASE ranked strictly better on validation, else 'svd' (the blend)."""
        return SOURCE_EASE if self.ease_ndcg > self.blend_ndcg else SOURCE_SVD


def choose_lists(
    factors: SVDFactors,
    inner: Ratings,
    validations: Sequence[Ratings],
    base: RankingPolicy,
    ease: EaseSettings | None,
    max_users: int | None = None,
    seed: int = 0,
) -> list[ListChoice]:
    """Blend weights and EASE λ for each of ``validations`` (models fitted on ``inner``)."""
    scope = evaluation.EvalScope(max_users=max_users, seed=seed)
    blends = evaluation.grid_ndcgs(factors, inner, validations, base, scope)
    blend_ndcgs = [_ndcg_of(policy, tried) for policy, tried in blends]
    if ease is None:
        return [
            ListChoice(policy, ndcg, tried=tried)
            for (policy, tried), ndcg in zip(blends, blend_ndcgs, strict=True)
        ]

    def validation_ndcgs(model: EASEModel) -> list:
        # Scored where the λ was solved: only these figures leave a forked worker, not the
        # weights, and no process holds more than one λ's model.
        per_validation = evaluation.ranking_evals(
            factors,
            inner,
            validations,
            [],
            ease_models=[model],
            ease_min_user_ratings=base.min_user_ratings,
            scope=scope,
        )
        return [metrics[0]["ndcg"] for metrics in per_validation]

    by_lambda = _validated_path(ease, inner, validation_ndcgs)
    choices = []
    for i, ((policy, tried), blend_ndcg) in enumerate(zip(blends, blend_ndcgs, strict=True)):
        ndcgs = [per_validation[i] for per_validation in by_lambda]
        best = int(np.nanargmax(ndcgs))  # ties: the smaller λ; NaN: not solved
        ease_tried = [
            {"ease_lambda": lam, "ndcg": v}
            for lam, v in zip(ease.lambdas, ndcgs, strict=True)
            if not np.isnan(v)
        ]
        choices.append(
            ListChoice(policy, blend_ndcg, ease.lambdas[best], ndcgs[best], tried + ease_tried)
        )
    return choices


def _validated_path(
    ease: EaseSettings, inner: Ratings, ndcgs: Callable[[EASEModel], list]
) -> list[list[float]]:
    """Every λ's validation NDCGs (one per validation set), in the grid's order; NaN where a
    λ is not a candidate for that validation set.

    The two largest λ are solved first. Where the largest ranks strictly better than the next,
    the curve still rises at the top of the grid: on a unimodal curve no smaller λ can win,
    so for that validation set they are not candidates, and when that holds for every set
    they are not solved. At scale, where the best λ grows with the users, that halves the
    grid's solves; MovieLens 100K's curve turns and its whole grid is solved. Each set's
    choice depends on its own curve only (a fold validated alone chooses as with its pair).
    Every choice measured is the one of the whole grid (docs/benchmarks.md).
    """
    order = sorted(ease.lambdas, reverse=True)
    first, rest = order[:2], order[2:]

    def solve(lambdas: list[float]) -> dict[float, list]:
        figures = ease.map_path(inner.users, inner.movies, ndcgs, lambdas)
        return dict(zip(lambdas, figures, strict=True))

    solved = solve(first)
    n_sets = len(solved[first[0]])
    rising = [len(first) == 2 and solved[first[0]][i] > solved[first[1]][i] for i in range(n_sets)]
    if rest and not all(rising):
        solved |= solve(rest)
    nan = float("nan")
    return [
        [
            nan if lam not in solved or (rising[i] and lam not in first) else solved[lam][i]
            for i in range(n_sets)
        ]
        for lam in ease.lambdas
    ]


def choose_on_holdout(
    everything: Ratings,
    holdout: np.ndarray,
    factors: SVDFactors,
    base: RankingPolicy,
    ease: EaseSettings | None,
    max_users: int | None = None,
    seed: int = 0,
) -> ListChoice:
    """``choose_lists`` validated on the ratings ``holdout`` indexes, with ``factors`` (and
    EASE) fitted on every other rating of ``everything``."""
    if holdout.size == 0:
        raise ValueError("choosing on a holdout needs validation ratings")
    inner = np.ones(everything.ratings.size, dtype=bool)
    inner[holdout] = False
    (choice,) = choose_lists(
        factors,
        everything.take(np.flatnonzero(inner)),
        [everything.take(holdout)],
        base,
        ease,
        max_users=max_users,
        seed=seed,
    )
    return choice


def _ndcg_of(policy: RankingPolicy, tried: list[dict]) -> float:
    for point in tried:
        if (point["taste_weight"], point["rating_weight"]) == (
            policy.taste_weight,
            policy.rating_weight,
        ):
            return float(point["ndcg"])
    raise ValueError(f"{policy} is not among the tried grid points")


def final_choice(
    folds_blend_ndcg: Sequence[float],
    folds_ease_ndcg: Sequence[float],
    lambdas: Sequence[float],
    policy: RankingPolicy,
) -> tuple[RankingPolicy, float | None]:
    """The list and λ for the model fitted on every rating, from the folds' validation figures.

    EASE ships when its validation NDCG summed over the folds is higher than the blend's; its
    λ is the median of the folds' choices.
    """
    ease = np.asarray(folds_ease_ndcg, dtype=np.float64)
    if ease.size == 0 or np.isnan(ease).any():
        return replace(policy, ranker=SOURCE_SVD), None
    lam = float(np.median(np.asarray(lambdas, dtype=np.float64)))
    better = float(ease.sum()) > float(np.sum(folds_blend_ndcg))
    return replace(policy, ranker=SOURCE_EASE if better else SOURCE_SVD), lam


def final_ranking_policy(folds: pd.DataFrame, min_user_ratings: int) -> RankingPolicy:
    """The shipped ranking of the model fitted on everything, from the folds' choices.

    Blend weights: the median of the per-fold choices. Ranker: EASE when its validation NDCG
    summed over the folds beats the blend's (`final_choice`). Each fold's choice came from
    validation ratings outside its test fold (its own inner split, or with the search on the
    one choice made on V, which every fold then carries: median and sum give that choice back).
    """
    if "taste_weight" not in folds:
        return RankingPolicy(min_user_ratings=min_user_ratings)
    blend = RankingPolicy(
        popularity_weight=1.0,
        taste_weight=float(folds["taste_weight"].median()),
        rating_weight=float(folds["rating_weight"].median()),
        min_user_ratings=min_user_ratings,
    )
    return final_ranking_choice(folds, blend)[0]


def final_ranking_choice(
    folds: pd.DataFrame, blend: RankingPolicy
) -> tuple[RankingPolicy, float | None]:
    """(policy with its ranker, EASE's λ or None) from the folds' validation figures."""
    if "ease_validation_ndcg" not in folds:
        return blend, None
    return final_choice(
        folds["blend_validation_ndcg"], folds["ease_validation_ndcg"], folds["ease_lambda"], blend
    )
