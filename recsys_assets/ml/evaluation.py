"""Held-out evaluation of one CV fold: baselines for rating error, ranking quality of top-10s.

Called by ``ml.training.run_fold`` after it fitted the fold's SVD, so every figure here is
measured on the same folds as the SVD's RMSE:

* rating error of the global mean and of Surprise's ``BaselineOnly`` (``mu + bu + bi``);
* precision/recall/NDCG@k of three rankings: SVD estimate only (the seed's), most popular,
  and the shipped blend (``ml.ranking``), whose weights are chosen on a validation split of
  the fold's *training* ratings with a second SVD fitted without them: the test fold is
  never used to pick anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
from surprise import BaselineOnly, Trainset

from recsys_assets.ml.ranking import (
    DEFAULT_GRID,
    RankingPolicy,
    _unit_rows,
    item_counts,
    popularity_feature,
    rank_users,
    ranking_metrics,
)
from recsys_assets.ml.topn import SVDFactors, _lookup, _top_k_indices, score_pairs

K = 10
VALIDATION_FRACTION = 0.25


@dataclass(frozen=True)
class Ratings:
    """Parallel raw-id arrays of (user, movie, rating)."""

    users: np.ndarray
    movies: np.ndarray
    ratings: np.ndarray

    @classmethod
    def from_tuples(cls, raw: list[tuple]) -> Ratings:
        n = len(raw)
        return cls(
            np.fromiter((r[0] for r in raw), dtype=np.int64, count=n),
            np.fromiter((r[1] for r in raw), dtype=np.int64, count=n),
            np.fromiter((r[2] for r in raw), dtype=np.float64, count=n),
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"user_id": self.users, "movie_id": self.movies})

    def take(self, index: np.ndarray) -> Ratings:
        return Ratings(self.users[index], self.movies[index], self.ratings[index])


def baseline_factors(model: BaselineOnly) -> SVDFactors:
    """``BaselineOnly``'s ``mu + bu + bi`` as zero-rank factors, so ``score_pairs`` applies."""
    ts = model.trainset
    base = SVDFactors.from_arrays(
        global_mean=ts.global_mean,
        bu=model.bu,
        bi=model.bi,
        pu=np.zeros((ts.n_users, 0)),
        qi=np.zeros((ts.n_items, 0)),
        raw2inner_users=ts._raw2inner_id_users,
        raw2inner_items=ts._raw2inner_id_items,
        rating_scale=ts.rating_scale,
    )
    return base


def error(est: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    err = est - truth
    return float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))


def shipped_ranking(
    factors: SVDFactors, train: Ratings, users: np.ndarray, policy: RankingPolicy, k: int = K
) -> pd.DataFrame:
    counts = item_counts(factors.raw_iids, train.movies)
    return rank_users(factors, users, train.users, train.movies, counts, policy, n=k)


def _csr(users: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """Binary users x movies matrix of (raw user, inner movie) pairs; users not listed dropped."""
    r = _lookup(users, rows)
    keep = (r >= 0) & (cols >= 0)
    m = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float64), (r[keep], cols[keep])),
        shape=(users.size, n_cols),
    )
    m.data[:] = 1.0
    return m


def grid_ndcg(
    factors: SVDFactors,
    train: Ratings,
    validation: Ratings,
    base: RankingPolicy,
    grid: Iterable[tuple[float, float]] = DEFAULT_GRID,
    k: int = K,
    block_size: int = 1024,
) -> tuple[RankingPolicy, list[dict]]:
    """``choose_policy`` over ``grid`` with NDCG@k on ``validation``, all points in one pass.

    Same ranking and metric as ``rank_users`` + ``ranking_metrics`` (warm users only: the
    cold ones get the popularity list whatever the weights), but the estimate, taste and
    popularity parts are computed once per block of users and reused for every grid point.
    """
    grid = list(grid)
    users = np.unique(validation.users)
    inner_u = _lookup(factors.raw_uids, users)
    rated = _csr(users, train.users, _lookup(factors.raw_iids, train.movies), factors.n_items)
    relevant = _csr(
        users, validation.users, _lookup(factors.raw_iids, validation.movies), factors.n_items
    )
    # Every distinct held-out movie counts as relevant, known to the model or not (as in
    # ranking_metrics).
    pairs = np.unique(np.stack([_lookup(users, validation.users), validation.movies]), axis=1)
    n_rel = np.bincount(pairs[0], minlength=users.size)
    per_user = np.diff(rated.indptr)
    warm = (inner_u >= 0) & (per_user >= base.min_user_ratings) & (n_rel > 0)
    pop = popularity_feature(item_counts(factors.raw_iids, train.movies))
    item_unit = _unit_rows(np.asarray(factors.qi, dtype=np.float64))
    taste = _unit_rows(np.asarray(rated @ np.asarray(factors.qi, dtype=np.float64)))
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)
    totals = np.zeros(len(grid))
    rows_all = np.flatnonzero(warm)
    for start in range(0, rows_all.size, block_size):
        rows = rows_all[start : start + block_size]
        iu = inner_u[rows]
        est = (factors.global_mean + factors.bu[iu])[:, None] + factors.bi
        est += factors.pu[iu] @ factors.qi.T
        cos = taste[rows] @ item_unit.T
        seen = rated[rows].toarray() > 0
        rel = relevant[rows].toarray() > 0
        idcg = ideal[np.minimum(n_rel[rows], k) - 1]
        for g, (taste_w, rating_w) in enumerate(grid):
            keys = pop + taste_w * cos + rating_w * est
            keys[seen] = -np.inf
            top = _top_k_indices(keys, k, factors.raw_iids)  # ties by movie id, as top_n
            hits = np.take_along_axis(rel, top, axis=1)
            totals[g] += float(((hits * discounts).sum(axis=1) / idcg).sum())
    # Users without a list (cold, or unknown) score like the popularity list for every grid
    # point, so they shift all totals equally: leaving them out does not change the choice.
    denom = max(int(warm.sum()), 1)
    tried, best, best_value = [], None, -np.inf
    for g, (taste_w, rating_w) in enumerate(grid):
        value = totals[g] / denom
        tried.append({"taste_weight": taste_w, "rating_weight": rating_w, "ndcg": value})
        if value > best_value:
            best_value = value
            best = replace(
                base, popularity_weight=1.0, taste_weight=taste_w, rating_weight=rating_w
            )
    return best, tried


def select_policy(
    trainset_builder: Callable[[list[tuple]], Trainset],
    fit: Callable[[Trainset], object],
    train_raw: list[tuple],
    seed: int,
    min_user_ratings: int,
) -> tuple[RankingPolicy, list[dict]]:
    """Pick blend weights on a validation split of ``train_raw`` (never the test fold)."""
    order = np.random.RandomState(seed).permutation(len(train_raw))
    n_val = max(1, int(len(train_raw) * VALIDATION_FRACTION))
    inner = [train_raw[i] for i in order[n_val:]]
    factors = SVDFactors.from_svd(fit(trainset_builder(inner)))
    everything = Ratings.from_tuples(train_raw)
    base = RankingPolicy(min_user_ratings=min_user_ratings)
    return grid_ndcg(factors, everything.take(order[n_val:]), everything.take(order[:n_val]), base)


def evaluate_fold(
    model: object,
    trainset: Trainset,
    train: Ratings,
    test: Ratings,
    policy: RankingPolicy,
) -> dict:
    """Baseline errors and ranking metrics on one fold; keys are flat floats for a table row."""
    row: dict = {}
    row["global_mean_rmse"], row["global_mean_mae"] = error(
        np.full(test.ratings.shape, trainset.global_mean), test.ratings
    )
    baseline = BaselineOnly(verbose=False).fit(trainset)
    row["baseline_rmse"], row["baseline_mae"] = error(
        score_pairs(baseline_factors(baseline), test.users, test.movies), test.ratings
    )

    factors = SVDFactors.from_svd(model)
    users = np.unique(test.users)
    relevant = test.frame()
    rankings = {
        # The seed's ranking: predicted rating for every user the model knows.
        "svd": RankingPolicy(min_user_ratings=0),
        "popular": RankingPolicy.popularity_only(),
        "blend": policy,
    }
    for name, ranking_policy in rankings.items():
        metrics = ranking_metrics(shipped_ranking(factors, train, users, ranking_policy), relevant)
        for metric in ("precision", "recall", "ndcg"):
            row[f"{name}_{metric}"] = metrics[metric]
    row["taste_weight"] = policy.taste_weight
    row["rating_weight"] = policy.rating_weight
    return row
