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


def dataset_and_sample(doc: str):
    """The ratings named on the command line as a `CompactDataset`, and its evaluation sample
    (`--max-ratings`, the run's default cap), said on stdout."""
    from recsys_assets.ml.datasets import CompactDataset
    from recsys_assets.ml.selection.sample import DEFAULT_MAX_RATINGS, evaluation_sample

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
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
    return dataset, sample


def choose_on_v(dataset, seed: int = 42):
    """The list choice as a run makes it on `dataset`, as a function of EASE's settings: V
    (10% of each user's ratings, users with at least 10), the seed SVD fitted once on the
    rest, then `choose_on_holdout`."""
    from recsys_assets.ml.factors import SVDFactors
    from recsys_assets.ml.ranking import RankingPolicy
    from recsys_assets.ml.selection.list_choice import choose_on_holdout
    from recsys_assets.ml.selection.search import validation_split
    from recsys_assets.ml.training import SVDParams, fit_svd

    everything = dataset.rating_arrays()
    holdout = validation_split(everything.users, 0.1, 10, seed)
    inner = np.ones(everything.ratings.size, dtype=bool)
    inner[holdout] = False
    trainset = dataset.trainset_of(np.flatnonzero(inner))
    factors = SVDFactors.from_svd(fit_svd(trainset, SVDParams()))

    def choose(ease_settings):
        return choose_on_holdout(
            everything, holdout, factors, RankingPolicy(), ease_settings, max_users=2000, seed=seed
        )

    return choose


def main() -> int:
    from recsys_assets.ml.selection.list_choice import DEFAULT_EASE

    _, sample = dataset_and_sample(__doc__)
    choose = choose_on_v(sample.dataset)
    figures = {}
    # float32 first: what the first call pays once (kernels, caches) counts against it.
    for dtype in (np.float32, np.float64):
        start = time.perf_counter()
        choice = choose(dataclasses.replace(DEFAULT_EASE, dtype=dtype))
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
