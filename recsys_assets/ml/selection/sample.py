"""The evaluation budget: what chooses and checks a model is run on at most `max_ratings`
ratings, sampled as whole users (seeded); the shipped models still fit every rating.

Why a sample: the precision of a validation RMSE or NDCG depends on how many ratings and users
are scored, not on the size of the catalogue, while the cost of the search, the CV folds and
EASE's λ grid grows with the data. Whole users keep each sampled user's history intact, so
per-user splits (V, the folds' users, cold start) mean what they mean on every rating.

Below the cap the sample *is* the dataset (the same object): every fold, choice and figure
is the one the full data gives, bit for bit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from recsys_assets.ml.arrays import unique
from recsys_assets.ml.datasets import CompactDataset

__all__ = [
    "DEFAULT_MAX_RATINGS",
    "EvaluationSample",
    "SampleSize",
    "evaluation_sample",
    "sample_users",
]

# Chosen by measurement (docs/benchmarks.md, "the evaluation budget"): at 1M ratings the
# search, the CV folds and the list choice take about a minute on 2 cores, and the figures
# they report move by less than their own fold-to-fold spread against a run on every rating.
DEFAULT_MAX_RATINGS = 1_000_000


@dataclass(frozen=True)
class SampleSize:
    """What the evaluation scored against what there is (the manifest's `evaluation`)."""

    max_ratings: int  # the cap (0: none)
    seed: int
    users: int
    ratings: int
    total_users: int
    total_ratings: int

    @property
    def sampled(self) -> bool:
        return self.ratings < self.total_ratings

    @property
    def user_fraction(self) -> float:
        """Share of the users evaluated (1.0 when not sampled)."""
        return self.users / self.total_users if self.sampled else 1.0

    def scope(self) -> tuple:
        """Figures of two models are comparable when their scopes are equal: both on every
        rating, or both on a sample of the same cap and seed."""
        return ("sample", self.max_ratings, self.seed) if self.sampled else ("all",)

    def as_dict(self) -> dict:
        return {**asdict(self), "sampled": self.sampled}

    @classmethod
    def of_record(cls, record: dict | None) -> SampleSize | None:
        """From a manifest's `evaluation` (None: a model from before the budget existed)."""
        if not record:
            return None
        return cls(**{k: record[k] for k in cls.__dataclass_fields__})

    def describe(self) -> str:
        if not self.sampled:
            return f"every rating ({self.ratings:,} ratings of {self.users:,} users)"
        return (
            f"a sample of {self.users:,} of {self.total_users:,} users "
            f"({self.ratings:,} of {self.total_ratings:,} ratings; cap {self.max_ratings:,}, "
            f"seed {self.seed})"
        )


@dataclass(frozen=True)
class EvaluationSample:
    """The ratings the search, the CV and the list choice run on, and how they were drawn."""

    dataset: CompactDataset
    size: SampleSize


def sample_users(users: np.ndarray, max_ratings: int, seed: int) -> np.ndarray:
    """Boolean mask of the ratings of whole users drawn in a seeded order until the next one
    would exceed `max_ratings` (at least one user). All True when the data fits."""
    return _draw(users, max_ratings, seed)[0]


def _draw(users: np.ndarray, max_ratings: int, seed: int) -> tuple[np.ndarray, int, int]:
    """`sample_users`' mask, with the number of users drawn and of all users (one sort)."""
    if max_ratings <= 0 or users.size <= max_ratings:
        n_users = int(unique(users).size)
        return np.ones(users.size, dtype=bool), n_users, n_users
    distinct, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
    order = np.random.RandomState(seed).permutation(distinct.size)
    taken = max(int(np.searchsorted(np.cumsum(counts[order]), max_ratings, side="right")), 1)
    chosen = np.zeros(distinct.size, dtype=bool)
    chosen[order[:taken]] = True
    return chosen[inverse.ravel()], taken, int(distinct.size)


def evaluation_sample(dataset: CompactDataset, max_ratings: int, seed: int) -> EvaluationSample:
    """`dataset` itself when it holds at most `max_ratings` ratings (or no cap), else a
    `CompactDataset` of a seeded sample of whole users, ratings in the dataset's order."""
    mask, users, total_users = _draw(dataset.users, max_ratings, seed)
    if users == total_users:
        sample = dataset
    else:
        sample = CompactDataset(
            dataset.users[mask], dataset.items[mask], dataset.ratings[mask], dataset.reader
        )
    size = SampleSize(
        max_ratings=int(max_ratings),
        seed=int(seed),
        users=users,
        ratings=len(sample),
        total_users=total_users,
        total_ratings=len(dataset),
    )
    return EvaluationSample(sample, size)
