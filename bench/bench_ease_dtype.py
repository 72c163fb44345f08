"""EASE's λ grid solved in float64 against float32: validation NDCG@10 per λ and seconds.

    python bench/bench_ease_dtype.py ../shared/datasets/ml-100k/u.data
    python bench/bench_ease_dtype.py /tmp/ratings-5m.db --max-ratings 1000000

The list choice of a run, as `cv_fold_plan` makes it: the evaluation sample (`--max-ratings`,
whole users, seeded), the search's validation set V, the seed configuration's SVD fitted on
every other rating of the sample, then `choose_on_holdout` with EASE's λ grid solved in each
dtype. Prints every λ's validation NDCG@10 in both, the largest difference, the λ each
chooses and the seconds of each choice. A `.db` argument is a ratings database in the native
schema (read with `RatingsStore.read_ratings`); anything else a MovieLens ratings file.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from surprise import Reader


def load(path: str):
    from recsys_assets.data.movielens import read_movielens
    from recsys_assets.db import RatingsStore

    if path.endswith(".db"):
        return RatingsStore(f"sqlite:///{path}").read_ratings()
    return read_movielens(path)[1]


def main() -> int:
    from recsys_assets.ml.datasets import CompactDataset
    from recsys_assets.ml.factors import SVDFactors
    from recsys_assets.ml.ranking import RankingPolicy
    from recsys_assets.ml.selection.list_choice import DEFAULT_EASE, choose_on_holdout
    from recsys_assets.ml.selection.sample import DEFAULT_MAX_RATINGS, evaluation_sample
    from recsys_assets.ml.selection.search import validation_split
    from recsys_assets.ml.training import SVDParams, fit_svd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ratings", help="MovieLens ratings file, or a native-schema .db")
    parser.add_argument("--max-ratings", type=int, default=DEFAULT_MAX_RATINGS)
    args = parser.parse_args()

    frame = load(args.ratings)
    scale = (float(frame["rating"].min()), float(frame["rating"].max()))
    dataset = CompactDataset.from_df(
        frame[["user_id", "movie_id", "rating"]], Reader(rating_scale=scale)
    )
    sample = evaluation_sample(dataset, args.max_ratings, seed=42)
    print(f"evaluated on {sample.size.describe()}")
    everything = sample.dataset.rating_arrays()
    holdout = validation_split(everything.users, 0.1, 10, 42)
    inner = np.ones(everything.ratings.size, dtype=bool)
    inner[holdout] = False
    params = SVDParams()
    trainset = sample.dataset.trainset_of(np.flatnonzero(inner))
    factors = SVDFactors.from_svd(fit_svd(trainset, params))
    figures = {}
    # float32 first: what the first call pays once (kernels, caches) counts against it.
    for dtype in (np.float32, np.float64):
        settings = dataclasses.replace(DEFAULT_EASE, dtype=dtype)
        start = time.perf_counter()
        choice = choose_on_holdout(
            everything, holdout, factors, RankingPolicy(), settings, max_users=2000, seed=42
        )
        seconds = time.perf_counter() - start
        ndcg = {t["ease_lambda"]: t["ndcg"] for t in choice.tried if "ease_lambda" in t}
        figures[dtype.__name__] = (ndcg, choice.ease_lambda, seconds)
    (n64, lam64, s64), (n32, lam32, s32) = figures["float64"], figures["float32"]
    print("λ          float64    float32    difference")
    for lam in n64:
        print(f"{lam:<8g} {n64[lam]:10.5f} {n32[lam]:10.5f} {n32[lam] - n64[lam]:+12.2e}")
    worst = max(abs(n32[lam] - n64[lam]) for lam in n64)
    print(f"largest |difference| {worst:.2e}; chosen λ float64 {lam64:g}, float32 {lam32:g}")
    print(f"list choice seconds: float64 {s64:.1f}, float32 {s32:.1f} ({s64 / s32:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
