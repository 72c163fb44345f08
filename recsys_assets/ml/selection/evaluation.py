"""Held-out evaluation of one CV fold: baselines for rating error, ranking quality of top-10s.

Called by ``ml.selection.cross_validation.cross_validate_svd`` after it fitted the fold's SVD, so
every figure here is measured on the same folds as the SVD's RMSE:

* rating error of the global mean and of Surprise's ``BaselineOnly`` (``mu + bu + bi``, its
  ALS fit vectorized: ``baseline_als``, tested equal to Surprise's);
* precision/recall/NDCG@k of the lists: SVD estimate only (the seed's), most popular, the
  blend (``ml.ranking``) and EASE, whose weights and λ are chosen on validation ratings from
  the fold's *training* data (``ml.selection.list_choice``): the search's V, or with fixed
  hyperparameters an inner split of the fold's own training ratings. The test fold is never
  used to pick anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys_assets.ml.arrays import Ratings, lookup, unique
from recsys_assets.ml.baselines import baseline_factors, error
from recsys_assets.ml.ease import EASEModel
from recsys_assets.ml.factors import SVDFactors, score_pairs
from recsys_assets.ml.ranking.keys import (
    PopularOrder,
    blend_keys,
    estimates,
    item_counts,
    popularity_feature,
    unit_rows,
)
from recsys_assets.ml.ranking.policy import RankingPolicy, choose_policy, grid_policies
from recsys_assets.ml.ranking.top_k import BlendRanking, top_k_indices

K = 10
VALIDATION_FRACTION = 0.25


@dataclass(frozen=True)
class EvalScope:
    """Which users a ranking evaluation scores and how: lists of ``k``; ``max_users``: a
    seeded sample of that many of the test users instead of all (ranking every movie for
    every user costs users x movies per policy: minutes at 162K users x 59K movies; rating
    errors always use every rating); ``block_size``: users per dense block (None: sized to
    the catalogue)."""

    k: int = K
    max_users: int | None = None
    seed: int = 0
    block_size: int | None = None

    def sample(self, users: np.ndarray) -> np.ndarray:
        """``users`` (sorted), or a seeded sample of ``max_users`` of them (sorted)."""
        if not self.max_users or users.size <= self.max_users:
            return users
        chosen = np.random.RandomState(self.seed).choice(users, self.max_users, replace=False)
        return np.sort(chosen)

    def rows_per_block(self, n_items: int) -> int:
        # Each block holds a few dense users x movies matrices: ~16M cells keeps one at ~130 MB
        # of float64 on a 59K-movie catalogue (2 workers side by side), 1024 rows on ml-100k.
        return self.block_size or max(64, min(1024, 2**24 // max(n_items, 1)))


def _csr(users: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """Binary users x movies matrix of (raw user, inner movie) pairs; users not listed dropped."""
    r = lookup(users, rows)
    keep = (r >= 0) & (cols >= 0)
    m = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float64), (r[keep], cols[keep])),
        shape=(users.size, n_cols),
    )
    m.data[:] = 1.0
    return m


def _distinct_per_user(user_pos: np.ndarray, movies: np.ndarray, n_users: int) -> np.ndarray:
    """Distinct movies per user position (positions < 0 dropped); 1-D unique of pair keys."""
    keep = user_pos >= 0
    movies = np.asarray(movies, dtype=np.int64)[keep]
    if movies.size == 0:
        return np.zeros(n_users, dtype=np.int64)
    lo = int(movies.min())
    span = int(movies.max()) - lo + 1
    keys = unique(user_pos[keep] * span + (movies - lo))
    return np.bincount(keys // span, minlength=n_users)


class _Scores:
    """Precision, recall and NDCG@k sums of lists against every test set (as
    ``ranking.metrics.ranking_metrics`` computes them, in one pass over dense blocks)."""

    def __init__(self, factors: SVDFactors, users: np.ndarray, tests: Sequence[Ratings], k: int):
        self.k = k
        self.relevant = [
            _csr(users, t.users, lookup(factors.raw_iids, t.movies), factors.n_items) for t in tests
        ]
        # Every distinct held-out movie counts as relevant, known to the model or not (as in
        # ranking_metrics). Users without any in a test set are not scored on it.
        n_rel = np.stack(
            [_distinct_per_user(lookup(users, t.users), t.movies, users.size) for t in tests]
        )
        self.scored = n_rel > 0
        self.n_rel = np.maximum(n_rel, 1)  # unscored users: any value, their scores are dropped
        self.discounts = 1.0 / np.log2(np.arange(2, k + 2))
        self.ideal = np.cumsum(self.discounts)

    def block(self, rows: np.ndarray) -> list[np.ndarray]:
        return [r[rows].toarray() > 0 for r in self.relevant]

    def of(self, top: np.ndarray, valid: np.ndarray, rel: list, rows: np.ndarray) -> np.ndarray:
        """[test, row, metric] of the lists ``top`` (``valid`` entries) for users ``rows``."""
        out = np.zeros((len(rel), rows.size, 3))
        for t, (relevant_t, n_rel_t) in enumerate(zip(rel, self.n_rel, strict=True)):
            on = self.scored[t, rows]
            on = slice(None) if on.all() else np.flatnonzero(on)  # a view, not a copy
            hits = np.take_along_axis(relevant_t[on], top[on], axis=1) & valid[on]
            n_hits = hits.sum(axis=1)
            dcg = (hits * self.discounts[: top.shape[1]]).sum(axis=1)
            idcg = self.ideal[np.minimum(n_rel_t[rows[on]], self.k) - 1]
            out[t, on] = np.stack([n_hits / self.k, n_hits / n_rel_t[rows[on]], dcg / idcg], axis=1)
        return out

    def means(self, sums: np.ndarray) -> list[list[dict[str, float]]]:
        means = sums / np.maximum(self.scored.sum(axis=1), 1)[:, None, None]
        return [[{"precision": m[0], "recall": m[1], "ndcg": m[2]} for m in per] for per in means]


def _top(keys: np.ndarray, k: int, raw_iids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    top = top_k_indices(keys, k, raw_iids)
    return top, np.isfinite(np.take_along_axis(keys, top, axis=1))


def ranking_evals(
    factors: SVDFactors,
    train: Ratings,
    tests: Sequence[Ratings],
    policies: Sequence[RankingPolicy],
    ease_models: Sequence[EASEModel] = (),
    ease_min_user_ratings: int = 1,
    scope: EvalScope = EvalScope(),
) -> list[list[dict[str, float]]]:
    """``ranking_metrics(rank_users(...))`` of several policies on each of ``tests``, in one
    pass over the users (``[test][policies + ease_models]`` metrics): the lists depend only on
    the model and ``train``, so they are ranked once, with the builders of ``ranking.keys``,
    and scored against every test set. Every user with a test rating is scored; cold or
    unknown users get the most-popular list, as ``rank_users`` ranks.

    ``ease_models``: EASE lists scored after the policies; warm users (known to ``factors``,
    at least ``ease_min_user_ratings`` training ratings) get the EASE list.
    """
    k = scope.k
    users = scope.sample(unique(np.concatenate([t.users for t in tests])))
    inner_u = lookup(factors.raw_uids, users)
    known = inner_u >= 0
    rated = _csr(users, train.users, lookup(factors.raw_iids, train.movies), factors.n_items)
    scores = _Scores(factors, users, tests, k)
    train_rows = lookup(users, train.users)
    per_user = np.bincount(train_rows[train_rows >= 0], minlength=users.size)
    counts = item_counts(factors.raw_iids, train.movies)
    pop = popularity_feature(counts)
    blend = BlendRanking(
        factors,
        RankingPolicy(),
        pop,
        unit_rows(np.asarray(rated @ np.asarray(factors.qi, dtype=np.float64))),
        unit_rows(np.asarray(factors.qi, dtype=np.float64)),
    )
    # The most-popular lists of every user, as (user, rank) -> movie.
    where, user_rows, rank = PopularOrder.of(factors.raw_iids, counts).lists(
        users, train.users, train.movies, k
    )
    popular_top = np.zeros((users.size, k), dtype=np.int64)
    popular_valid = np.zeros((users.size, k), dtype=bool)
    popular_top[user_rows, rank - 1], popular_valid[user_rows, rank - 1] = where, True
    sums = np.zeros((len(tests), len(policies) + len(ease_models), 3))  # p, r, ndcg totals
    ease_rated = [m.rated_rows(users, train.users, train.movies) for m in ease_models]
    ease_warm = known & (per_user >= ease_min_user_ratings)
    block_size = scope.rows_per_block(factors.n_items)
    for start in range(0, users.size, block_size):
        rows = np.arange(start, min(start + block_size, users.size))
        if policies:  # EASE alone (each λ of the grid, scored apart) needs neither
            # The model's qi.T as a view: the estimates of the CV figures, bit for bit.
            est = estimates(factors, np.where(known[rows], inner_u[rows], 0), factors.qi.T)
            cos = blend.taste[rows] @ blend.item_unit.T
        seen = rated[rows].toarray() > 0
        rel = scores.block(rows)
        popular = scores.of(popular_top[rows], popular_valid[rows], rel, rows)
        warm_rows: dict[int, np.ndarray] = {}  # per min_user_ratings: the grid shares one
        for p, policy in enumerate(policies):
            result = popular.copy()
            if not policy.popular_only:
                if policy.min_user_ratings not in warm_rows:
                    warm = known[rows] & (per_user[rows] >= policy.min_user_ratings)
                    warm_rows[policy.min_user_ratings] = np.flatnonzero(warm)
                w = warm_rows[policy.min_user_ratings]
                if w.size:
                    keys = blend_keys(policy, est[w], pop, cos[w])
                    keys[seen[w]] = -np.inf
                    top, valid = _top(keys, k, factors.raw_iids)
                    result[:, w] = scores.of(top, valid, [r[w] for r in rel], rows[w])
            sums[:, p] += result.sum(axis=1)
        w = np.flatnonzero(ease_warm[rows])
        for e, (model, rated_e) in enumerate(zip(ease_models, ease_rated, strict=True)):
            result = popular.copy()
            if w.size:
                ease_scores = model.scores_of(rated_e[rows[w]])
                keys = model.catalogue_keys(ease_scores, factors.raw_iids, pop)
                keys[seen[w]] = -np.inf
                top, valid = _top(keys, k, factors.raw_iids)
                result[:, w] = scores.of(top, valid, [r[w] for r in rel], rows[w])
            sums[:, len(policies) + e] += result.sum(axis=1)
    return scores.means(sums)


def grid_ndcgs(
    factors: SVDFactors,
    train: Ratings,
    validations: Sequence[Ratings],
    base: RankingPolicy,
    scope: EvalScope = EvalScope(),
) -> list[tuple[RankingPolicy, list[dict]]]:
    """The blend's grid (``policy.DEFAULT_GRID``) chosen on each of ``validations`` by NDCG@k
    (``policy.choose_policy``), for one model: the lists are ranked once."""
    policies = grid_policies(base)
    results = ranking_evals(factors, train, validations, policies, scope=scope)
    return [choose_policy(policies, [m["ndcg"] for m in per]) for per in results]


def validation_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (fit, validation) index split of ``n`` training ratings; a quarter validates."""
    order = np.random.RandomState(seed).permutation(n)
    n_val = max(1, int(n * VALIDATION_FRACTION))
    return order[n_val:], order[:n_val]


def evaluate_factors(
    factors: SVDFactors,
    train: Ratings,
    test: Ratings,
    policy: RankingPolicy,
    max_users: int | None = None,
    seed: int = 0,
    ease: EASEModel | None = None,
) -> dict:
    """Baseline errors and ranking metrics of one fold, from the fold model's factors (small
    enough to pass between processes); keys are flat floats for a table row.

    ``factors.global_mean`` is the fold trainset's mean, the global-mean baseline. Rating
    errors use every test rating; ranking metrics a sample of ``max_users`` users if set.
    ``ease``: the fold's EASE model, whose list is scored as ``ease_*`` in the same pass.
    """
    row: dict = {}
    row["global_mean_rmse"], row["global_mean_mae"] = error(
        np.full(test.ratings.shape, factors.global_mean), test.ratings
    )
    baseline = baseline_factors(factors, train, factors.global_mean)
    row["baseline_rmse"], row["baseline_mae"] = error(
        score_pairs(baseline, test.users, test.movies), test.ratings
    )
    rankings = {
        # The seed's ranking: predicted rating for every user the model knows.
        "svd": RankingPolicy(min_user_ratings=0),
        "popular": RankingPolicy.popularity_only(),
        "blend": policy,
    }
    names = list(rankings)
    results = ranking_evals(
        factors,
        train,
        [test],
        list(rankings.values()),
        ease_models=[ease] if ease is not None else [],
        ease_min_user_ratings=policy.min_user_ratings,
        scope=EvalScope(max_users=max_users, seed=seed),
    )[0]
    if ease is not None:
        names.append("ease")
    for name, metrics in zip(names, results, strict=True):
        for metric in ("precision", "recall", "ndcg"):
            row[f"{name}_{metric}"] = float(metrics[metric])
    row["taste_weight"] = policy.taste_weight
    row["rating_weight"] = policy.rating_weight
    return row
