"""The hyperparameter search on a MovieLens file, run as `make run` runs the graph.

    python bench/tune.py ../shared/datasets/ml-100k [--folds 5] [--drop-quarter]

Imports the ratings into a fresh RECSYS_HOME (a temporary directory), runs `training_job` in
process with the default search budget (what `recsys run` does), and prints the search table
(`svd_hyperparameters`), the CV report of the chosen configuration (`cv_report`, folds that
never held a validation rating), the gates and who got suggestions.

`--drop-quarter`: first remove a seeded random quarter of each user's ratings (MovieLens 100K:
74,646 ratings from 943 users are left), the data on which the seed's hyperparameters lost to
BaselineOnly and no user got a suggestion.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def drop_quarter(ratings: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """`ratings` minus a seeded random quarter (rounded up) of each user's ratings."""
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(ratings))
    shuffled = ratings.iloc[order]
    rank = shuffled.groupby("user_id").cumcount().to_numpy()
    size = shuffled.groupby("user_id")["user_id"].transform("size").to_numpy()
    return shuffled[rank >= -(-size // 4)].sort_index()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="MovieLens directory or ratings file (u.data, ratings.csv)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--drop-quarter", action="store_true")
    parser.add_argument("--tuning", choices=["search", "fixed"], default="search")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="recsys-tune-") as tmp:
        os.environ["RECSYS_HOME"] = tmp
        for var in ("RECSYS_DATABASE_URL", "RECSYS_SCHEMA", "RECSYS_IO_BASE", "DAGSTER_HOME"):
            os.environ.pop(var, None)
        import dagster as dg

        from recsys_assets.assets.config import training_run_config
        from recsys_assets.cli.instance import prepare_dagster_home
        from recsys_assets.cli.run import execute_training
        from recsys_assets.cli.summary import summarize
        from recsys_assets.data.movielens import read_movielens
        from recsys_assets.db import RatingsStore

        movies, ratings = read_movielens(args.path)
        if args.drop_quarter:
            ratings = drop_quarter(ratings)
        db = RatingsStore.from_env()
        db.ensure_schema()
        db.insert_movies(movies)
        db.insert_ratings(ratings)
        print(
            f"{len(ratings)} ratings, {ratings['user_id'].nunique()} users, "
            f"{ratings['movie_id'].nunique()} movies; {args.folds}-fold CV; tuning {args.tuning}"
        )
        prepare_dagster_home()
        run_config = training_run_config(n_folds=args.folds, tuning=args.tuning)
        run_config["loggers"] = {"console": {"config": {"log_level": "WARNING"}}}
        start = time.perf_counter()
        with dg.DagsterInstance.get() as instance:
            result = execute_training(instance, run_config, "in_process")
            summary = summarize(result, None, start)
        search = result.asset_materializations_for_node("svd_hyperparameters")
        if search:
            meta = {k: v.value for k, v in search[0].metadata.items()}
            if "search" in meta:
                print(f"\nsearch ({meta['search_seconds']:.1f}s, {meta['fits']} fits):\n")
                print(meta["search"])
        cv = result.asset_materializations_for_node("cv_report")
        if cv:
            print("\ncv_report:\n")
            print(cv[0].metadata["model_vs_baselines"].value)
        print()
        print("\n".join(summary.lines))
        table = db.read_predictions()
        print(
            f"\nuser_predictions: {table['user_id'].nunique()} of "
            f"{ratings['user_id'].nunique()} users; by source "
            f"{table.groupby('source')['user_id'].nunique().to_dict()}; model_version "
            f"{sorted(set(table['model_version']))}"
        )
        return 0 if summary.success else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
