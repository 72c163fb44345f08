"""Serving benchmark on a MovieLens file: load time, predict/recommend latency, artifact size.

    python bench/bench_serving.py ../shared/datasets/ml-100k [--requests 5000]

Fits the SVD with the seed's hyperparameters on every rating, picks the blend weights, EASE's λ
and the shipped list (EASE or blend) on a validation split (as the pipeline does), fits EASE
on every rating, saves them through the model store (compacted, signed with a throwaway key)
into a temporary directory, then measures `recsys_assets.serving` in the
same run against the seed-style way of serving the same model: the full pickled SVD, a
`model.predict` call per movie to recommend. Prints p50/p99 per call and the ratios.
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from surprise import Reader

from recsys_assets.data.movielens import read_movielens
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets.ml.datasets import CompactDataset
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.model_bundle import ModelBundle
from recsys_assets.ml.ranking import SOURCE_EASE, RankingPolicy
from recsys_assets.ml.selection.evaluation import validation_split
from recsys_assets.ml.selection.list_choice import DEFAULT_EASE, choose_lists
from recsys_assets.ml.stripped_svd import strip_svd
from recsys_assets.ml.training import (
    DEFAULT_MIN_USER_RATINGS,
    SVDParams,
    fit_svd,
)
from recsys_assets.serving import Recommender


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    arr = np.asarray(samples_ns, dtype=np.float64) / 1e3  # µs
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def timed(fn, args_list) -> list[int]:
    out = []
    for args in args_list:
        t0 = time.perf_counter_ns()
        fn(*args)
        out.append(time.perf_counter_ns() - t0)
    return out


def seed_recommend(model, user: int, movies: list[int], rated: set[int], n: int) -> list:
    # The seed's way: predict every unrated movie one call at a time, sort.
    preds = [(model.predict(user, m).est, m) for m in movies if m not in rated]
    preds.sort(reverse=True)
    return preds[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="MovieLens directory or ratings file")
    parser.add_argument("--requests", type=int, default=5000, help="predict calls timed")
    parser.add_argument("--seed-users", type=int, default=50, help="users for seed-style recommend")
    parser.add_argument("--repeats", type=int, default=5, help="recommend rounds over all users")
    parser.add_argument(
        "--list",
        choices=("chosen", "blend"),
        default="chosen",
        help="serve the list chosen on validation (default) or the SVD blend, for comparison",
    )
    args = parser.parse_args()

    _, ratings = read_movielens(args.path)
    data = CompactDataset.from_df(
        ratings[["user_id", "movie_id", "rating"]],
        Reader(rating_scale=(float(ratings["rating"].min()), float(ratings["rating"].max()))),
    )
    params = SVDParams()
    t0 = time.perf_counter()
    model = fit_svd(data.build_full_trainset(), params)
    everything = data.rating_arrays()
    fit_idx, val_idx = validation_split(len(data), params.random_state)
    inner = SVDFactors.from_svd(fit_svd(data.trainset_of(fit_idx), params))
    (choice,) = choose_lists(
        inner,
        everything.take(fit_idx),
        [everything.take(val_idx)],
        RankingPolicy(min_user_ratings=DEFAULT_MIN_USER_RATINGS),
        DEFAULT_EASE,
        seed=params.random_state,
    )
    policy = replace(choice.policy, ranker=choice.ranker if args.list == "chosen" else "svd")
    ease = None
    if policy.ranker == SOURCE_EASE:
        ease = DEFAULT_EASE.fit(everything.users, everything.movies, choice.ease_lambda)
    bundle = ModelBundle.of(strip_svd(model), policy, ease)  # as model_artifact pickles it
    print(
        f"fitted SVD (+ EASE) and chose the shipped list in {time.perf_counter() - t0:.1f}s: "
        f"{policy}, EASE λ={choice.ease_lambda:g} (validation NDCG@10 EASE "
        f"{choice.ease_ndcg:.4f}, blend {choice.blend_ndcg:.4f})"
    )

    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(Path(tmp) / "models", signing_key="bench-key")
        manifest = store.save(bundle, {"ranking": policy.as_dict()}, promote=True)
        seed_bytes = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        seed_path = Path(tmp) / "seed.pkl"
        seed_path.write_bytes(seed_bytes)

        t0 = time.perf_counter()
        rec = Recommender(store)
        rec.recommend(int(ratings["user_id"].iloc[0]), 10)  # first call loads + verifies
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        seed_model = pickle.loads(seed_path.read_bytes())
        seed_load_s = time.perf_counter() - t0

        rng = np.random.default_rng(0)
        users = ratings["user_id"].unique()
        movies = ratings["movie_id"].unique()
        pairs = list(
            zip(
                rng.choice(users, args.requests).tolist(),
                rng.choice(movies, args.requests).tolist(),
                strict=True,
            )
        )
        predict_ns = timed(rec.predict, pairs)
        seed_predict_ns = timed(lambda u, m: seed_model.predict(u, m).est, pairs)

        unknown = [10_000_000 + i for i in range(100)]
        rec_args = [(int(u), 10) for u in users] + [(u, 10) for u in unknown]
        rounds = np.array([timed(rec.recommend, rec_args) for _ in range(args.repeats)])
        recommend_ns = rounds.ravel().tolist()
        # Best of the rounds per user: the code path without scheduler noise (other processes
        # on a shared machine preempt single calls; the raw p99 includes that).
        best_ns = rounds.min(axis=0).tolist()

        rated = ratings.groupby("user_id")["movie_id"].apply(set).to_dict()
        movie_list = movies.tolist()
        seed_users = users[: args.seed_users].tolist()
        seed_rec_ns = timed(
            lambda u: seed_recommend(seed_model, u, movie_list, rated[u], 10),
            [(u,) for u in seed_users],
        )

    p50, p99 = percentiles(predict_ns)
    sp50, sp99 = percentiles(seed_predict_ns)
    r50, r99 = percentiles(recommend_ns)
    b50, b99 = percentiles(best_ns)
    s50, s99 = percentiles(seed_rec_ns)
    size, seed_size = manifest["size_bytes"], len(seed_bytes)
    print(f"ratings        {len(ratings)} ({len(users)} users, {len(movies)} movies)")
    print(
        f"artifact       {size / 1e6:.2f} MB (seed-style full pickle {seed_size / 1e6:.2f} MB, "
        f"{seed_size / size:.1f}x larger)"
    )
    print(
        f"load           {load_s * 1e3:.0f} ms (verify signature + SHA-256, unpickle, "
        f"precompute); seed-style unverified pickle.load {seed_load_s * 1e3:.0f} ms"
    )
    print(
        f"predict        p50 {p50:.1f} µs  p99 {p99:.1f} µs   "
        f"(seed model.predict p50 {sp50:.1f} µs  p99 {sp99:.1f} µs; n={len(pairs)})"
    )
    print(
        f"recommend(10)  p50 {r50:.1f} µs  p99 {r99:.1f} µs  over {len(rec_args)} users "
        f"({len(unknown)} unknown) x {args.repeats} rounds"
    )
    print(
        f"  best-of-{args.repeats} per user  p50 {b50:.1f} µs  p99 {b99:.1f} µs   "
        f"target p99 <= 1000 µs: {'met' if b99 <= 1000 else 'MISSED'} (raw p99: "
        f"{'met' if r99 <= 1000 else 'missed'}; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs)"
    )
    print(
        f"seed-style     predict-every-movie recommend p50 {s50 / 1e3:.1f} ms  p99 "
        f"{s99 / 1e3:.1f} ms over {len(seed_users)} users; ratio p50 {s50 / r50:.0f}x"
    )


if __name__ == "__main__":
    main()
