"""`user_predictions`: top-N unseen movies per user, written to the app database."""

import time

import dagster as dg
import numpy as np
import pandas as pd

from recsys_assets.assets.config import PredictionsConfig
from recsys_assets.assets.metadata import peak_rss_mb
from recsys_assets.ml.topn import SVDFactors, top_n
from recsys_assets.resources.model_store import ModelStore
from recsys_assets.resources.ratings_db import RatingsDatabase


@dg.asset(group_name="serving", compute_kind="numpy")
def user_predictions(
    context: dg.AssetExecutionContext,
    config: PredictionsConfig,
    ratings_df: pd.DataFrame,
    model_artifact: dict,
    model_store: ModelStore,
    ratings_db: RatingsDatabase,
) -> dg.MaterializeResult:
    """Table `user_predictions(user_id, movie_id, rank, score, model_version, created_at)`.

    Scores come from the model `latest` points to (checksum-verified), vectorized over all
    users and movies; the previous set is replaced in one transaction.
    """
    start = time.perf_counter()
    model, manifest = model_store.load_latest()
    if manifest["version"] != model_artifact["version"]:
        context.log.warning(
            "latest is %s, not the model just exported (%s); scoring with latest",
            manifest["version"],
            model_artifact["version"],
        )
    factors = SVDFactors.from_svd(model)
    del model
    users = np.unique(ratings_df["user_id"].to_numpy())
    predictions = top_n(
        factors,
        users,
        ratings_df["user_id"].to_numpy(),
        ratings_df["movie_id"].to_numpy(),
        n=config.top_n,
        block_size=config.block_size,
    )
    score_seconds = time.perf_counter() - start
    context.log.info(
        "scored %d users × %d movies in %.2fs", len(users), len(factors.raw_iids), score_seconds
    )
    write_start = time.perf_counter()
    rows = ratings_db.replace_predictions(predictions, manifest["version"])
    write_seconds = time.perf_counter() - write_start
    seconds = time.perf_counter() - start
    pairs = len(users) * len(factors.raw_iids)
    context.log.info("wrote %d rows for %d users in %.2fs", rows, len(users), write_seconds)
    return dg.MaterializeResult(
        metadata={
            "users": len(users),
            "rows": rows,
            "table": "user_predictions",
            "model_version": manifest["version"],
            "top_n": config.top_n,
            "score_seconds": score_seconds,
            "write_seconds": write_seconds,
            "seconds": seconds,
            "pairs_scored": pairs,
            "pairs_per_second": pairs / seconds if seconds > 0 else 0.0,
            "peak_rss_mb": peak_rss_mb(),
        }
    )
