"""EASE's λ chosen on the evaluation sample, used on every rating as chosen or scaled.

    python bench/bench_ease_scale.py /tmp/ratings-5m.db [--max-ratings 1000000]

`cv_report` chooses λ on the sample (whole users, a fraction f of them) and `ranking_model`
fits every rating with λ / f: XᵀX grows with the users. This script checks that on data:

1. on the sample, as a run does: V, the seed SVD on the rest, λ chosen over the grid;
2. on every rating: a V of its own (the same rule), the seed SVD on the rest, then EASE's
   validation NDCG@10 (2,000 ranking users) with the chosen λ and with the scaled one.

A `.db` argument is a ratings database in the native schema; anything else a MovieLens file.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from bench_ease_dtype import load  # this script's folder is on sys.path
from surprise import Reader


def _validation_ndcgs(dataset, lambdas, seed=42):
    """(λ chosen, every λ's validation NDCG@10) on `dataset` with its own V."""
    from recsys_assets.ml.factors import SVDFactors
    from recsys_assets.ml.ranking import RankingPolicy
    from recsys_assets.ml.selection.list_choice import DEFAULT_EASE, choose_on_holdout
    from recsys_assets.ml.selection.search import validation_split
    from recsys_assets.ml.training import SVDParams, fit_svd

    everything = dataset.rating_arrays()
    holdout = validation_split(everything.users, 0.1, 10, seed)
    inner = np.ones(everything.ratings.size, dtype=bool)
    inner[holdout] = False
    trainset = dataset.trainset_of(np.flatnonzero(inner))
    factors = SVDFactors.from_svd(fit_svd(trainset, SVDParams()))
    settings = dataclasses.replace(DEFAULT_EASE, lambdas=tuple(lambdas))
    choice = choose_on_holdout(
        everything, holdout, factors, RankingPolicy(), settings, max_users=2000, seed=seed
    )
    return choice.ease_lambda, {
        t["ease_lambda"]: t["ndcg"] for t in choice.tried if "ease_lambda" in t
    }


def main() -> int:
    from recsys_assets.ml.datasets import CompactDataset
    from recsys_assets.ml.ease import DEFAULT_LAMBDAS
    from recsys_assets.ml.selection.sample import DEFAULT_MAX_RATINGS, evaluation_sample

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
    start = time.perf_counter()
    chosen, on_sample = _validation_ndcgs(sample.dataset, DEFAULT_LAMBDAS)
    scaled = chosen / sample.size.user_fraction
    tried = ", ".join(f"{lam:g}: {v:.5f}" for lam, v in sorted(on_sample.items()))
    print(f"on the sample: λ {chosen:g} chosen of {tried} ({time.perf_counter() - start:.0f}s)")
    start = time.perf_counter()
    _, on_all = _validation_ndcgs(dataset, sorted({chosen, scaled}))
    print(f"on every rating ({time.perf_counter() - start:.0f}s), validation NDCG@10 of EASE:")
    print(f"  λ {chosen:g} (as chosen on the sample)  {on_all[chosen]:.5f}")
    print(f"  λ {scaled:g} (scaled, what ships)  {on_all[scaled]:.5f}")
    print(f"  scaled - as chosen: {on_all[scaled] - on_all[chosen]:+.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
