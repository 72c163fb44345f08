"""Held-out evaluation on a MovieLens file: the model vs its baselines, as cv_report measures it.

    python bench/evaluate.py ../shared/datasets/ml-100k [--folds 4] [--jobs 2]

Runs the pipeline's own cross-validation (`ml.training.cross_validate_svd`, seeded 4-fold,
seed's SVD hyperparameters) and prints RMSE/MAE of the SVD, BaselineOnly and the global mean,
and precision/recall/NDCG@10 of three top-10 lists per user: the shipped blend, the SVD
estimate alone (the seed's ranking) and most-popular. Relevant = the user's held-out movies;
rated-in-training movies are excluded (see `recsys_assets.ml.ranking`). The blend's weights are
chosen per fold on a validation split of that fold's training ratings.
"""

from __future__ import annotations

import argparse
import time

from surprise import Dataset, Reader

from recsys_assets.assets.metadata import markdown_table
from recsys_assets.assets.training import comparison_table
from recsys_assets.data.movielens import read_movielens
from recsys_assets.ml.training import SVDParams, cross_validate_svd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="MovieLens directory or ratings file (u.data, ratings.csv)")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=None, help="fold worker processes")
    parser.add_argument("--min-user-ratings", type=int, default=5)
    args = parser.parse_args()

    _, ratings = read_movielens(args.path)
    low, high = float(ratings["rating"].min()), float(ratings["rating"].max())
    data = Dataset.load_from_df(
        ratings[["user_id", "movie_id", "rating"]], Reader(rating_scale=(low, high))
    )
    start = time.perf_counter()
    folds = cross_validate_svd(
        data,
        SVDParams(),
        n_folds=args.folds,
        seed=SVDParams().random_state,
        n_jobs=args.jobs,
        min_user_ratings=args.min_user_ratings,
    )
    seconds = time.perf_counter() - start
    print(
        f"{len(ratings)} ratings, {ratings['user_id'].nunique()} users, "
        f"{ratings['movie_id'].nunique()} movies; {args.folds}-fold CV in {seconds:.1f}s\n"
    )
    print(markdown_table(comparison_table(folds)))
    print()
    cols = ["fold", "blend_ndcg", "svd_ndcg", "popular_ndcg", "taste_weight", "rating_weight"]
    print(markdown_table(folds[cols].astype({"fold": str})))
    blend, popular = folds["blend_ndcg"].mean(), folds["popular_ndcg"].mean()
    svd = folds["svd_ndcg"].mean()
    print(
        f"\nNDCG@10: shipped blend {blend:.4f} = {blend / popular:.2f}x most-popular "
        f"({popular:.4f}) and {blend / svd:.2f}x SVD-only ({svd:.4f})"
    )


if __name__ == "__main__":
    main()
