"""Held-out evaluation on a MovieLens file: every ranked list and the rating baselines, as
cv_report measures them.

    python bench/evaluate.py ../shared/datasets/ml-100k [--folds 4] [--jobs 2]

Runs the pipeline's own cross-validation (`ml.selection.cross_validation.cross_validate_svd`,
seeded 4-fold, seed's SVD hyperparameters) and prints RMSE/MAE of the SVD, BaselineOnly and the
global mean, and precision/recall/NDCG@10 of every top-10 list per user: the shipped list (per
fold, the better of the next two on validation), the EASE ranking model, the SVD blend, the SVD
estimate alone (the seed's ranking) and most-popular. Relevant = the user's held-out movies;
rated-in-training movies are excluded (see `recsys_assets.ml.ranking`). The blend's weights,
EASE's λ and the shipped list are chosen per fold on a validation split of that fold's training
ratings; the test folds only measure.
"""

from __future__ import annotations

import argparse
import time

from surprise import Reader

from recsys_assets.assets.cv_tables import comparison_table
from recsys_assets.assets.metadata import markdown_table
from recsys_assets.data.movielens import read_movielens
from recsys_assets.ml.datasets import CompactDataset
from recsys_assets.ml.selection.cross_validation import CVSettings, cross_validate_svd
from recsys_assets.ml.selection.cv_result import CVResult
from recsys_assets.ml.training import SVDParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="MovieLens directory or ratings file (u.data, ratings.csv)")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=None, help="fold worker processes")
    parser.add_argument("--min-user-ratings", type=int, default=5)
    args = parser.parse_args()

    _, ratings = read_movielens(args.path)
    low, high = float(ratings["rating"].min()), float(ratings["rating"].max())
    data = CompactDataset.from_df(
        ratings[["user_id", "movie_id", "rating"]], Reader(rating_scale=(low, high))
    )
    start = time.perf_counter()
    settings = CVSettings(args.folds, SVDParams().random_state, args.jobs, args.min_user_ratings)
    result = CVResult.of_folds(
        cross_validate_svd(data, SVDParams(), settings),
        SVDParams(),
        args.min_user_ratings,
        settings.ease,
    )
    folds = result.folds
    seconds = time.perf_counter() - start
    print(
        f"{len(ratings)} ratings, {ratings['user_id'].nunique()} users, "
        f"{ratings['movie_id'].nunique()} movies; {args.folds}-fold CV in {seconds:.1f}s\n"
    )
    print(markdown_table(comparison_table(folds)))
    print()
    cols = [
        "fold",
        "shipped_ndcg",
        "ease_ndcg",
        "blend_ndcg",
        "svd_ndcg",
        "popular_ndcg",
        "blend_validation_ndcg",
        "ease_validation_ndcg",
        "ease_lambda",
        "taste_weight",
        "rating_weight",
    ]
    print(markdown_table(folds[[c for c in cols if c in folds]].astype({"fold": str})))
    shipped, popular = folds["shipped_ndcg"].mean(), folds["popular_ndcg"].mean()
    blend = folds["blend_ndcg"].mean()
    print(
        f"\nNDCG@10: shipped list {shipped:.4f} = {shipped / popular:.2f}x most-popular "
        f"({popular:.4f}) and {shipped / blend:.2f}x the SVD blend ({blend:.4f}); "
        f"the model fitted on every rating would ship "
        + (f"EASE (λ={result.ease.lam:g})" if result.policy.ranker == "ease" else "the SVD blend")
    )


if __name__ == "__main__":
    main()
