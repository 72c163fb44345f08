"""The ranking policy: which list a user gets, and how the blend's weights are chosen.

Users with fewer than ``min_user_ratings`` training ratings (or unknown to the model) get the
most-popular list (``source='popular'``); the others the SVD blend (``source='svd'``) or, when
``ranker`` is ``'ease'``, the EASE ranking model's list (``source='ease'``). The blend's key is

    popularity_weight * pop[i] + taste_weight * cos(taste[u], q[i]) + rating_weight * est[u, i]

(``ranking.keys``); its weights are chosen on validation ratings (``choose_policy``), never on
a test fold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal, get_args

__all__ = [
    "DEFAULT_GRID",
    "MIN_RELATIVE_GAIN",
    "RANKERS",
    "Ranker",
    "SOURCE_EASE",
    "SOURCE_POPULAR",
    "SOURCE_SVD",
    "RankingPolicy",
    "choose_policy",
    "grid_policies",
]

# Candidate (taste_weight, rating_weight) pairs, popularity_weight fixed at 1: small enough to
# evaluate in a second or two per fold, wide enough to include "popularity only" (0, 0).
DEFAULT_GRID: tuple[tuple[float, float], ...] = tuple(
    (taste, rating) for taste in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0) for rating in (0.0, 0.05)
)
# Relative NDCG gain over most-popular a blend needs on validation to be chosen.
MIN_RELATIVE_GAIN = 0.02
SOURCE_SVD = "svd"
SOURCE_POPULAR = "popular"
SOURCE_EASE = "ease"
Ranker = Literal["svd", "ease"]
RANKERS: tuple[Ranker, ...] = get_args(Ranker)


@dataclass(frozen=True)
class RankingPolicy:
    """How the shipped top-N is ranked; stored in the model manifest under ``ranking``.

    The defaults rank by the SVD estimate alone (the seed's ranking); ``choose_policy``
    picks the blend weights.
    """

    popularity_weight: float = 0.0
    taste_weight: float = 0.0
    rating_weight: float = 1.0
    min_user_ratings: int = 1
    # Which model ranks warm users: 'svd' (the blend) or 'ease' (the ranking model).
    ranker: Ranker = SOURCE_SVD

    def __post_init__(self) -> None:
        if self.ranker not in RANKERS:
            raise ValueError(f"ranker must be one of {RANKERS}, got {self.ranker!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_manifest(cls, manifest: dict) -> RankingPolicy:
        # Models saved before the blend existed rank by the SVD estimate alone.
        ranking = manifest.get("ranking") or {}
        fields = cls.__dataclass_fields__
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in ranking.items() if k in fields})

    @classmethod
    def popularity_only(cls, min_user_ratings: int = 1) -> RankingPolicy:
        return cls(1.0, 0.0, 0.0, min_user_ratings)

    @property
    def popular_only(self) -> bool:
        """True when the blend's key is popularity alone (the most-popular list)."""
        return not (self.taste_weight or self.rating_weight)


def grid_policies(
    base: RankingPolicy, grid: Iterable[tuple[float, float]] = DEFAULT_GRID
) -> list[RankingPolicy]:
    """``base`` (its ``min_user_ratings``) at each (taste, rating) point, popularity weight 1."""
    return [replace(base, popularity_weight=1.0, taste_weight=t, rating_weight=r) for t, r in grid]


def choose_policy(
    policies: Sequence[RankingPolicy], ndcgs: Sequence[float]
) -> tuple[RankingPolicy, list[dict]]:
    """The policy with the best validation NDCG (ties: the earlier, simpler one), unless the
    plain most-popular list among ``policies`` comes within ``MIN_RELATIVE_GAIN`` of it.

    Returns the chosen policy and every tried point with its NDCG, for the metadata.
    """
    tried, best, best_value = [], None, float("-inf")
    for policy, ndcg in zip(policies, ndcgs, strict=True):
        weights = {"taste_weight": policy.taste_weight, "rating_weight": policy.rating_weight}
        tried.append({**weights, "ndcg": ndcg})
        if ndcg > best_value:
            best, best_value = policy, ndcg
    if best is None:
        raise ValueError("empty grid")
    # A blend must beat the plain popularity list clearly on validation to be chosen; a
    # marginal win there is as likely a loss on new data (the shipped list must not rank
    # worse than most-popular).
    popular = [i for i, p in enumerate(policies) if p.popular_only]
    if popular and best_value < ndcgs[popular[0]] * (1.0 + MIN_RELATIVE_GAIN):
        best = policies[popular[0]]
    return best, tried
