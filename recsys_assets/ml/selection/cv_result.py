"""What the cross-validation decided, as one value: the fold table, the ranking the model
fitted on every rating ships, the EASE model to fit for it and the SVD's hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from recsys_assets.ml.ranking.policy import SOURCE_EASE, RankingPolicy
from recsys_assets.ml.selection.list_choice import (
    EaseSettings,
    final_ranking_choice,
    final_ranking_policy,
)
from recsys_assets.ml.selection.sample import SampleSize
from recsys_assets.ml.training import SVDParams

__all__ = ["CVResult", "EaseSpec"]


@dataclass(frozen=True)
class EaseSpec:
    """The EASE ranking model to fit on every rating: λ and which movies it keeps.

    `lam` is for every rating: the λ chosen on validation (`validated_lam`), scaled by the
    users of every rating over those of the evaluation sample. XᵀX grows with the users, so
    on a sample of a fraction f of them λ·f regularizes as λ does on all of them.
    """

    lam: float
    max_items: int | None
    min_item_ratings: int
    validated_lam: float | None = None  # None: not sampled (the same as `lam`)


@dataclass(frozen=True)
class CVResult:
    """The folds (one row each, `cross_validate_svd`'s) and what they choose for the model
    fitted on every rating (`list_choice.final_ranking_policy`)."""

    folds: pd.DataFrame
    policy: RankingPolicy  # the shipped ranking: its ranker and the blend's weights
    ease: EaseSpec | None  # the EASE model to fit (None: EASE does not ship)
    params: SVDParams
    evaluated: SampleSize | None = None  # the ratings the folds ran on (None: not recorded)

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    @classmethod
    def of_folds(
        cls,
        folds: pd.DataFrame,
        params: SVDParams,
        min_user_ratings: int,
        ease: EaseSettings | None,
        evaluated: SampleSize | None = None,
    ) -> CVResult:
        """From every fold's row: blend weights the folds' median, the shipped list and λ from
        their validation figures (`list_choice.final_ranking_choice`); λ scaled to every
        rating when `evaluated` is a sample (`EaseSpec`)."""
        folds = folds.sort_values("fold").reset_index(drop=True)
        policy = final_ranking_policy(folds, min_user_ratings)
        _, lam = final_ranking_choice(folds, policy)
        spec = None
        # EASE is fitted on every rating only to ship it (`ranking_model`).
        if lam is not None and ease is not None and policy.ranker == SOURCE_EASE:
            if evaluated is not None and evaluated.sampled:
                full = lam / evaluated.user_fraction
                spec = EaseSpec(full, ease.max_items, ease.min_item_ratings, validated_lam=lam)
            else:
                spec = EaseSpec(lam, ease.max_items, ease.min_item_ratings)
        return cls(folds, policy, spec, params, evaluated)
