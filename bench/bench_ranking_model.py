"""The ranking model's fit alone (EASE, `ml.ease.fit_ease`) on generated, MovieLens-shaped data.

    nice python bench/bench_ranking_model.py --shape 25m --max-items 10000
    python bench/bench_ranking_model.py --shape 1m --max-items 0 --dtype float32

Generates ratings with `recsys demo-data`'s generator (the `--shape` sizes of the CLI), then fits
EASE once on (user, movie) pairs as `ranking_model` does, and prints: the share of ratings the
kept movies carry, the seconds of XᵀX and of the solve, and peak RSS before and after the fit
(the difference is what the fit itself needs on top of the ratings). Issue target at 25M:
fit <= 3 minutes, <= 8 GB. One fit per invocation, so each figure has its own peak.

With `--path`, it then solves the default λ grid (what `cv_report` validates) two ways on the
same XᵀX: one λ after another in this process with one BLAS thread (what the earlier
threads amounted to, as scipy's LAPACK calls hold the GIL) and `fit_ease_path` (whole rounds
in forked workers with one BLAS thread each, a last partial round here with every BLAS thread),
checks the weights are equal up to the last bit of float32 and prints both times.

With `--rank N`, it then ranks every user's top N as `user_predictions` does
(`rank_users`, scores from a random rank-100 SVD of the same users and movies, no database
write), with EASE's list and with the blend's, each once on one thread and once on every CPU's
thread (blocks side by side), checks the two tables are equal and prints users x movies pairs
per second and the ratio.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
from threadpoolctl import threadpool_limits

from recsys_assets.cli import DEMO_SHAPES
from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.ml.ease import (
    DEFAULT_LAMBDAS,
    EASEModel,
    fit_ease_path,
    gram,
    weights_from_gram,
)
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.ranking import (
    SOURCE_EASE,
    RankingPolicy,
    ShippedModel,
    item_counts,
    rank_users,
)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(DEMO_SHAPES), default="1m")
    parser.add_argument("--max-items", type=int, default=10_000, help="kept movies (0 = all)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--lam", type=float, default=500.0)
    parser.add_argument("--rank", type=int, default=0, help="then rank every user's top N")
    parser.add_argument("--path", action="store_true", help="then time the λ grid's solves")
    args = parser.parse_args()

    n_users, n_movies, n_ratings = DEMO_SHAPES[args.shape]
    t0 = time.perf_counter()
    _, ratings = generate_demo_ratings(n_users, n_movies, n_ratings, seed=0)
    users = ratings["user_id"].to_numpy(np.int64)
    movies = ratings["movie_id"].to_numpy(np.int64)
    del ratings
    rss_data = _peak_rss_mb()
    print(
        f"{args.shape}: {n_ratings} ratings, {n_users} users, {n_movies} movies "
        f"generated in {time.perf_counter() - t0:.1f}s; load {os.getloadavg()[0]:.2f}"
    )
    before = _peak_rss_mb()
    dtype = np.float64 if args.dtype == "float64" else np.float32
    t0 = time.perf_counter()
    g, kept, pairs, n_u = gram(users, movies, args.max_items or None, dtype)
    t_gram = time.perf_counter() - t0
    t0 = time.perf_counter()
    weights = weights_from_gram(g, args.lam, overwrite=True)
    t_solve = time.perf_counter() - t0
    del g
    model = EASEModel(kept, weights, args.lam, pairs, n_u)
    share = pairs / len(users)
    print(
        f"EASE λ={args.lam:g} on the {kept.size} most-rated movies ({share:.1%} of the ratings), "
        f"{args.dtype}: XᵀX {t_gram:.1f}s + solve {t_solve:.1f}s = {t_gram + t_solve:.1f}s; "
        f"B {weights.nbytes / 2**20:.0f} MB; peak RSS {before:.0f} MB before the fit, "
        f"{_peak_rss_mb():.0f} MB after (+{_peak_rss_mb() - before:.0f} MB); "
        f"load {os.getloadavg()[0]:.2f}"
    )
    if args.path:
        _path(users, movies, args.max_items or None, dtype)
    if args.rank:
        _rank(model, users, movies, args.rank, rss_data)


def _path(users, movies, max_items: int | None, dtype) -> None:
    g, kept, *_ = gram(users, movies, max_items, dtype)
    t0 = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):  # as the threads of the old path did
        serial = [weights_from_gram(g, lam, overwrite=False) for lam in DEFAULT_LAMBDAS]
    t_serial = time.perf_counter() - t0
    del g
    t0 = time.perf_counter()
    path = fit_ease_path(users, movies, DEFAULT_LAMBDAS, max_items, dtype)
    t_path = time.perf_counter() - t0  # includes its own XᵀX
    # The path solves a last, partial round with every BLAS thread, whose sums may round a
    # few weights differently in the last bit from the one-thread solves here.
    diff = max(float(np.abs(a - m.weights).max()) for a, m in zip(serial, path, strict=True))
    assert all(
        np.allclose(a, m.weights, rtol=1e-5, atol=1e-7) for a, m in zip(serial, path, strict=True)
    )
    print(
        f"λ path {list(DEFAULT_LAMBDAS)} on {kept.size} movies: one after another "
        f"{t_serial:.1f}s (solves only); fit_ease_path {t_path:.1f}s (XᵀX included); "
        f"{t_serial / t_path:.2f}x; weights equal up to max |Δ| {diff:.1e}; "
        f"load {os.getloadavg()[0]:.2f}"
    )


def _rank(model: EASEModel, users, movies, n: int, rss_data: float) -> None:
    rng = np.random.default_rng(0)
    raw_uids, raw_iids = np.unique(users), np.unique(movies)
    factors = SVDFactors(
        global_mean=3.5,
        bu=rng.normal(0, 0.3, raw_uids.size),
        bi=rng.normal(0, 0.3, raw_iids.size),
        pu=rng.normal(0, 0.1, (raw_uids.size, 100)),
        qi=rng.normal(0, 0.1, (raw_iids.size, 100)),
        raw_uids=raw_uids,
        raw_iids=raw_iids,
        lower=1.0,
        upper=5.0,
    )
    counts = item_counts(raw_iids, movies)
    pairs = raw_uids.size * raw_iids.size
    policies = {
        "EASE": RankingPolicy(1.0, 0.0, 0.0, 5, ranker=SOURCE_EASE),
        "blend": RankingPolicy(1.0, 0.5, 0.1, 5),  # popularity + taste + rating, ranker 'svd'
    }
    for name, policy in policies.items():
        tables, seconds = {}, {}
        for threads in (1, None):
            t0 = time.perf_counter()
            shipped = ShippedModel(factors, counts, policy, model)
            tables[threads] = rank_users(shipped, raw_uids, (users, movies), n=n, n_threads=threads)
            seconds[threads] = time.perf_counter() - t0
            label = "1 thread" if threads == 1 else f"{os.cpu_count()} threads"
            print(
                f"{name}: ranked top {n} of {raw_iids.size} movies for {raw_uids.size} users, "
                f"{label}: {seconds[threads]:.1f}s, {pairs / seconds[threads] / 1e6:.1f}M pairs/s "
                f"(no database write); load {os.getloadavg()[0]:.2f}"
            )
        assert tables[1].equals(tables[None]), f"{name}: threaded ranking differs from one thread"
        print(f"{name}: threads vs one {seconds[1] / seconds[None]:.2f}x, tables equal")
    print(f"peak RSS {_peak_rss_mb():.0f} MB ({rss_data:.0f} MB with the ratings alone)")


if __name__ == "__main__":
    main()
