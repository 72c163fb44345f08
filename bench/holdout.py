"""Held-out test on MovieLens: a random quarter of each user's ratings, never seen by training.

    python bench/holdout.py ../shared/datasets/ml-100k [--seed 0] [--folds 4] [--jobs 2]

Splits each user's ratings at random (seeded): a quarter is the test set, the rest is all the
pipeline sees. On the rest it runs what `training_job` runs: cross-validation
(`cross_validate_svd`: blend weights, EASE's λ and the shipped list chosen on validation ratings
inside each fold's training data), the final choices (`final_ranking_policy`), the SVD fit on
all of the rest and the EASE fit (`fit_ease`), then ranks every user's top 10 with
`rank_users` exactly as `user_predictions` does. Prints precision/recall/NDCG@10 on the held-out
quarter of the shipped list and of every other list (relevant = any held-out rating, rated
movies excluded), and checks the shipped list's figure against the table's.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import numpy as np
import pandas as pd
from surprise import Reader

from recsys_assets.assets.metadata import markdown_table
from recsys_assets.data.movielens import read_movielens
from recsys_assets.ml.arrays import Ratings
from recsys_assets.ml.datasets import CompactDataset
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.ranking import (
    SOURCE_EASE,
    SOURCE_SVD,
    ShippedModel,
    item_counts,
    rank_users,
    ranking_metrics,
)
from recsys_assets.ml.selection.cross_validation import CVSettings, cross_validate_svd
from recsys_assets.ml.selection.cv_result import CVResult
from recsys_assets.ml.selection.evaluation import evaluate_factors
from recsys_assets.ml.selection.list_choice import DEFAULT_EASE
from recsys_assets.ml.training import SVDParams, fit_svd


def quarter_per_user(ratings: pd.DataFrame, seed: int) -> np.ndarray:
    """Boolean mask: a random quarter (rounded) of each user's ratings."""
    rng = np.random.default_rng(seed)
    key = rng.random(len(ratings))
    order = ratings.assign(_key=key).groupby("user_id")["_key"].rank(method="first")
    size = ratings.groupby("user_id")["user_id"].transform("size")
    return (order <= np.round(size * 0.25)).to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="MovieLens directory or ratings file (u.data, ratings.csv)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=None, help="fold worker processes")
    parser.add_argument("--min-user-ratings", type=int, default=5)
    args = parser.parse_args()

    _, ratings = read_movielens(args.path)
    held = quarter_per_user(ratings, args.seed)
    train_df, test_df = ratings[~held].reset_index(drop=True), ratings[held]
    low, high = float(ratings["rating"].min()), float(ratings["rating"].max())
    data = CompactDataset.from_df(
        train_df[["user_id", "movie_id", "rating"]], Reader(rating_scale=(low, high))
    )
    params = SVDParams()
    start = time.perf_counter()
    settings = CVSettings(args.folds, params.random_state, args.jobs, args.min_user_ratings)
    folds = cross_validate_svd(data, params, settings)
    cv_seconds = time.perf_counter() - start
    cv = CVResult.of_folds(folds, params, args.min_user_ratings, settings.ease)
    policy, lam = cv.policy, cv.ease.lam

    start = time.perf_counter()
    factors = SVDFactors.from_svd(fit_svd(data.build_full_trainset(), params))
    ease = DEFAULT_EASE.fit(train_df["user_id"].to_numpy(), train_df["movie_id"].to_numpy(), lam)
    fit_seconds = time.perf_counter() - start
    train = Ratings(
        train_df["user_id"].to_numpy(),
        train_df["movie_id"].to_numpy(),
        train_df["rating"].to_numpy(),
    )
    test = Ratings(
        test_df["user_id"].to_numpy(), test_df["movie_id"].to_numpy(), test_df["rating"].to_numpy()
    )
    # The published lists, ranked as user_predictions ranks them.
    counts = item_counts(factors.raw_iids, train.movies)
    model = ShippedModel(factors, counts, policy, ease if policy.ranker == SOURCE_EASE else None)
    shipped = rank_users(model, np.unique(train.users), (train.users, train.movies), n=10)
    published = ranking_metrics(shipped, test_df[["user_id", "movie_id"]], k=10)
    blend = replace(policy, ranker=SOURCE_SVD)
    row = evaluate_factors(factors, train, test, blend, ease=ease)

    print(
        f"{len(ratings)} ratings, {ratings['user_id'].nunique()} users; held out a random "
        f"quarter of each user's ratings (seed {args.seed}): {len(train_df)} to train on, "
        f"{len(test_df)} to test. CV on the training part {cv_seconds:.1f}s, final fits "
        f"{fit_seconds:.1f}s; load average {os.getloadavg()[0]:.2f}\n"
    )
    shipped_name = f"EASE, λ={lam:g}" if policy.ranker == SOURCE_EASE else "blend"
    names = {
        "shipped": f"shipped list ({shipped_name})",
        "ease": f"EASE ranking model (λ={lam:g})",
        "blend": "SVD blend "
        f"(taste {policy.taste_weight:g}, rating {policy.rating_weight:g}, popularity 1)",
        "svd": "SVD, ranked by predicted rating",
        "popular": "most popular",
    }
    shipped_prefix = "ease" if policy.ranker == SOURCE_EASE else "blend"
    rows = []
    for prefix, label in names.items():
        source = shipped_prefix if prefix == "shipped" else prefix
        rows.append(
            {
                "list": label,
                **{
                    f"{metric}@10": row[f"{source}_{metric}"]
                    for metric in ("precision", "recall", "ndcg")
                },
            }
        )
    print(markdown_table(pd.DataFrame(rows)))
    assert abs(published["ndcg"] - row[f"{shipped_prefix}_ndcg"]) < 1e-12, "lists differ"
    print(
        f"\nshipped list NDCG@10 on the held-out quarter: {published['ndcg']:.4f} "
        f"({published['users']} users; from the published top-10s, equal to the table's)"
    )


if __name__ == "__main__":
    main()
