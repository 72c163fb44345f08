"""Held-out evaluation of one CV fold: baselines for rating error, ranking quality of top-10s.

Called by ``ml.cross_validation.cross_validate_svd`` after it fitted the fold's SVD, so every figure
here is measured on the same folds as the SVD's RMSE:

* rating error of the global mean and of Surprise's ``BaselineOnly`` (``mu + bu + bi``, its
  ALS fit vectorized: ``baseline_als``, tested equal to Surprise's);
* precision/recall/NDCG@k of the lists: SVD estimate only (the seed's), most popular, the
  blend (``ml.ranking``) and EASE, whose weights and λ are chosen on validation ratings from
  the fold's *training* data (``ml.list_choice``): the search's V, or with fixed
  hyperparameters an inner split of the fold's own training ratings. The test fold is never
  used to pick anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from recsys_assets.ml.arrays import Ratings, lookup, top_k_indices, unique
from recsys_assets.ml.baselines import baseline_factors, error
from recsys_assets.ml.ease import EASEModel
from recsys_assets.ml.factors import SVDFactors, score_pairs
from recsys_assets.ml.ranking import (
    DEFAULT_GRID,
    RankingPolicy,
    _unit_rows,
    item_counts,
    popularity_feature,
)

K = 10
VALIDATION_FRACTION = 0.25
# Relative NDCG gain over most-popular a blend needs on validation to be chosen.
MIN_RELATIVE_GAIN = 0.02


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


def ranking_eval(
    factors: SVDFactors,
    train: Ratings,
    test: Ratings,
    policies: Sequence[RankingPolicy],
    k: int = K,
    max_users: int | None = None,
    seed: int = 0,
    block_size: int | None = None,
) -> list[dict[str, float]]:
    """``ranking_metrics(rank_users(...))`` for several policies in one pass over the users.

    Same lists (ties by movie id), same metrics, same users (everyone with a ``test`` rating;
    cold or unknown users get the most-popular list), but the estimate, taste and popularity
    matrices are computed once per block of users and shared by every policy.
    """
    return ranking_evals(factors, train, [test], policies, k, max_users, seed, block_size)[0]


def sample_users(users: np.ndarray, max_users: int | None, seed: int) -> np.ndarray:
    """``users`` (sorted), or a seeded sample of ``max_users`` of them (sorted)."""
    if not max_users or users.size <= max_users:
        return users
    return np.sort(np.random.RandomState(seed).choice(users, max_users, replace=False))


def _block_rows(n_items: int) -> int:
    # Each block holds a few dense users x movies matrices: ~16M cells keeps one at ~130 MB
    # of float64 on a 59K-movie catalogue (2 workers side by side), 1024 rows on ml-100k.
    return max(64, min(1024, 2**24 // max(n_items, 1)))


def ranking_evals(
    factors: SVDFactors,
    train: Ratings,
    tests: Sequence[Ratings],
    policies: Sequence[RankingPolicy],
    k: int = K,
    max_users: int | None = None,
    seed: int = 0,
    block_size: int | None = None,
    ease_models: Sequence[EASEModel] = (),
    ease_min_user_ratings: int = 1,
) -> list[list[dict[str, float]]]:
    """``ranking_eval`` on each of ``tests``: the lists depend only on the model and ``train``,
    so they are ranked once and scored against every test set (``[test][policy]`` metrics).

    ``ease_models``: EASE lists scored in the same pass, after the policies (``[test][policies
    + ease_models]``); warm users (known to ``factors``, at least ``ease_min_user_ratings``
    training ratings) get the EASE list, the others most-popular, as ``rank_users`` ranks.

    ``max_users``: score a seeded sample of that many of the test users instead of all —
    ranking every movie for every user costs users x movies per policy, which at 162K users
    x 59K movies is minutes per evaluation; the rating errors are always on every rating.
    """
    users = sample_users(unique(np.concatenate([t.users for t in tests])), max_users, seed)
    block_size = block_size or _block_rows(factors.n_items)
    inner_u = lookup(factors.raw_uids, users)
    known = inner_u >= 0
    safe_u = np.where(known, inner_u, 0)  # unknown users never use their (dummy) estimates
    rated = _csr(users, train.users, lookup(factors.raw_iids, train.movies), factors.n_items)
    relevant = [
        _csr(users, t.users, lookup(factors.raw_iids, t.movies), factors.n_items) for t in tests
    ]
    # Every distinct held-out movie counts as relevant, known to the model or not (as in
    # ranking_metrics). Users without any in a test set are not scored on it.
    n_rel = np.stack(
        [_distinct_per_user(lookup(users, t.users), t.movies, users.size) for t in tests]
    )
    scored = n_rel > 0
    n_rel = np.maximum(n_rel, 1)  # unscored users: any value, their scores are dropped
    train_rows = lookup(users, train.users)
    per_user = np.bincount(train_rows[train_rows >= 0], minlength=users.size)
    pop = popularity_feature(item_counts(factors.raw_iids, train.movies))
    item_unit = _unit_rows(np.asarray(factors.qi, dtype=np.float64))
    taste = _unit_rows(np.asarray(rated @ np.asarray(factors.qi, dtype=np.float64)))
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)
    sums = np.zeros((len(tests), len(policies) + len(ease_models), 3))  # p, r, ndcg totals
    ease_rated = [m.rated_rows(users, train.users, train.movies) for m in ease_models]
    ease_warm = known & (per_user >= ease_min_user_ratings)

    def score(top: np.ndarray, rel: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
        """[test, row, metric] of the lists ``top`` for users ``rows``."""
        out = np.zeros((len(tests), rows.size, 3))
        for t, (relevant_t, n_rel_t) in enumerate(zip(rel, n_rel, strict=True)):
            on = scored[t, rows]
            on = slice(None) if on.all() else np.flatnonzero(on)  # a view, not a copy
            hits = np.take_along_axis(relevant_t[on], top[on], axis=1)
            n_hits = hits.sum(axis=1)
            dcg = (hits * discounts[: top.shape[1]]).sum(axis=1)
            idcg = ideal[np.minimum(n_rel_t[rows[on]], k) - 1]
            out[t, on] = np.stack([n_hits / k, n_hits / n_rel_t[rows[on]], dcg / idcg], axis=1)
        return out

    for start in range(0, users.size, block_size):
        rows = np.arange(start, min(start + block_size, users.size))
        iu = safe_u[rows]
        est = (factors.global_mean + factors.bu[iu])[:, None] + factors.bi
        est += factors.pu[iu] @ factors.qi.T
        cos = taste[rows] @ item_unit.T
        seen = rated[rows].toarray() > 0
        rel = [r[rows].toarray() > 0 for r in relevant]
        popular_keys = np.broadcast_to(pop, seen.shape).copy()
        popular_keys[seen] = -np.inf
        popular = score(top_k_indices(popular_keys, k, factors.raw_iids), rel, rows)
        warm_rows: dict[int, tuple] = {}  # per min_user_ratings: the grid shares one slice
        for p, policy in enumerate(policies):
            result = popular.copy()
            if policy.taste_weight or policy.rating_weight:
                if policy.min_user_ratings not in warm_rows:
                    warm = known[rows] & (per_user[rows] >= policy.min_user_ratings)
                    w = np.flatnonzero(warm)
                    rel_w = [r[w] for r in rel]
                    warm_rows[policy.min_user_ratings] = (w, cos[w], est[w], seen[w], rel_w)
                w, cos_w, est_w, seen_w, rel_w = warm_rows[policy.min_user_ratings]
                if w.size:
                    # Same sums in the same order as pop_w * pop + taste_w * cos + rating_w * est.
                    keys = policy.taste_weight * cos_w
                    keys += policy.popularity_weight * pop
                    keys += policy.rating_weight * est_w
                    keys[seen_w] = -np.inf
                    top = top_k_indices(keys, k, factors.raw_iids)
                    result[:, w] = score(top, rel_w, rows[w])
            sums[:, p] += result.sum(axis=1)
        w = np.flatnonzero(ease_warm[rows])
        for e, (model, rated_e) in enumerate(zip(ease_models, ease_rated, strict=True)):
            result = popular.copy()
            if w.size:
                keys = model.catalogue_keys(
                    model.scores_of(rated_e[rows[w]]), factors.raw_iids, pop
                )
                keys[seen[w]] = -np.inf
                top = top_k_indices(keys, k, factors.raw_iids)
                result[:, w] = score(top, [r[w] for r in rel], rows[w])
            sums[:, len(policies) + e] += result.sum(axis=1)
    means = sums / np.maximum(scored.sum(axis=1), 1)[:, None, None]
    return [[{"precision": m[0], "recall": m[1], "ndcg": m[2]} for m in per] for per in means]


def grid_ndcg(
    factors: SVDFactors,
    train: Ratings,
    validation: Ratings,
    base: RankingPolicy,
    grid: Iterable[tuple[float, float]] = DEFAULT_GRID,
    k: int = K,
    max_users: int | None = None,
    seed: int = 0,
) -> tuple[RankingPolicy, list[dict]]:
    """``choose_policy`` over ``grid`` with NDCG@k on ``validation``, all points in one pass."""
    policies = _grid_policies(base, grid)
    return _choose(policies, ranking_eval(factors, train, validation, policies, k, max_users, seed))


def grid_ndcgs(
    factors: SVDFactors,
    train: Ratings,
    validations: Sequence[Ratings],
    base: RankingPolicy,
    grid: Iterable[tuple[float, float]] = DEFAULT_GRID,
    k: int = K,
    max_users: int | None = None,
    seed: int = 0,
) -> list[tuple[RankingPolicy, list[dict]]]:
    """``grid_ndcg`` on each of ``validations`` (one model): the lists are ranked once."""
    policies = _grid_policies(base, grid)
    results = ranking_evals(factors, train, validations, policies, k, max_users, seed)
    return [_choose(policies, per_validation) for per_validation in results]


def _grid_policies(base: RankingPolicy, grid: Iterable[tuple[float, float]]) -> list:
    return [replace(base, popularity_weight=1.0, taste_weight=t, rating_weight=r) for t, r in grid]


def _choose(
    policies: list[RankingPolicy], results: list[dict[str, float]]
) -> tuple[RankingPolicy, list[dict]]:
    """The best policy by NDCG (ties: the earlier), unless most-popular is nearly as good."""
    tried, best, best_value = [], None, -np.inf
    for policy, metrics in zip(policies, results, strict=True):
        tried.append(
            {
                "taste_weight": policy.taste_weight,
                "rating_weight": policy.rating_weight,
                "ndcg": metrics["ndcg"],
            }
        )
        if metrics["ndcg"] > best_value:  # ties keep the earlier (simpler) point
            best, best_value = policy, metrics["ndcg"]
    # A blend must beat the plain popularity list clearly on validation to be chosen; a
    # marginal win there is as likely a loss on new data (the shipped list must not rank
    # worse than most-popular).
    popular = [i for i, p in enumerate(policies) if not (p.taste_weight or p.rating_weight)]
    if popular:
        floor = results[popular[0]]["ndcg"] * (1.0 + MIN_RELATIVE_GAIN)
        if best_value < floor:
            best = policies[popular[0]]
    return best, tried


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
        K,
        max_users,
        seed,
        ease_models=[ease] if ease is not None else [],
        ease_min_user_ratings=policy.min_user_ratings,
    )[0]
    if ease is not None:
        names.append("ease")
    for name, metrics in zip(names, results, strict=True):
        for metric in ("precision", "recall", "ndcg"):
            row[f"{name}_{metric}"] = float(metrics[metric])
    row["taste_weight"] = policy.taste_weight
    row["rating_weight"] = policy.rating_weight
    return row
