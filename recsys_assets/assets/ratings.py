"""`ratings` (the app's table, an external asset) and `ratings_df` (cleaned and counted)."""

import time

import dagster as dg
import numpy as np
import pandas as pd

from recsys_assets.asset_keys import RATINGS, RATINGS_DF
from recsys_assets.assets.config import RatingsConfig
from recsys_assets.assets.metadata import markdown_table, peak_rss_mb
from recsys_assets.assets.retries import db_retry_policy, retry_only_transient_db_errors
from recsys_assets.data.cleaning import clean_ratings, invalid_share_problem
from recsys_assets.db import RatingsStore
from recsys_assets.settings import Settings

# The ratings table is written by the web app, not by Dagster: an external asset. The ratings
# sensor (and any app calling Dagster's API) reports a materialization when it changes.
ratings = dg.AssetSpec(
    RATINGS,
    group_name="app_db",
    description="The app's ratings table (RECSYS_DATABASE_URL; `ratings` or `ratings_rating`). "
    "Written by the web app; changes are reported by the `ratings_db_sensor` or the app itself.",
    kinds={"sql"},
)


@dg.asset(
    group_name="training",
    compute_kind="pandas",
    deps=[ratings],
    retry_policy=db_retry_policy(),
)
def ratings_df(
    context: dg.AssetExecutionContext,
    config: RatingsConfig,
    ratings_db: dg.ResourceParam[RatingsStore],
) -> dg.Output[pd.DataFrame]:
    """Active movie ratings as `user_id, movie_id, rating, timestamp`, with bad rows dropped."""
    with retry_only_transient_db_errors(context):
        return _load_ratings_df(context, config, ratings_db)


def _load_ratings_df(
    context: dg.AssetExecutionContext,
    config: RatingsConfig,
    ratings_db: RatingsStore,
) -> dg.Output[pd.DataFrame]:
    settings = Settings.from_env()
    low, high = scale = config.rating_scale(settings)
    if not low < high:
        raise dg.Failure(
            f"the rating scale {low:g}–{high:g} is empty: its minimum must be below its "
            "maximum (RECSYS_RATING_SCALE=MIN,MAX, `recsys run --rating-scale MIN,MAX`, or "
            "ratings_df config rating_min/rating_max)"
        )
    start = time.perf_counter()
    raw = ratings_db.read_ratings()
    read_seconds = time.perf_counter() - start
    df, report = clean_ratings(raw, scale)
    del raw
    context.log.info(
        "read %d ratings in %.2fs, kept %d, dropped %s, flagged %s (scale %g–%g)",
        report.rows_read,
        read_seconds,
        report.rows_kept,
        report.dropped,
        report.flagged,
        low,
        high,
    )
    counts: dict[str, dg.RawMetadataValue] = {
        "rows_read": report.rows_read,
        "rows_kept": report.rows_kept,
        "rows_dropped": report.rows_dropped,
        **{f"dropped_{reason}": count for reason, count in report.dropped.items()},
        **{f"flagged_{reason}": count for reason, count in report.flagged.items()},
        # The cleaning settings this run used (the refresh op cleans with the champion's).
        "scale_min": float(low),
        "scale_max": float(high),
        "invalid_fraction": float(report.invalid_fraction),
    }
    limit = config.invalid_limit(settings)
    problem = invalid_share_problem(report, limit)
    if problem is not None:
        # Before the empty check: when every row is out of scale, the scale is the cause.
        raise dg.Failure(
            f"{ratings_db.safe_url()}: {problem}. The champion and user_predictions are unchanged",
            metadata={**counts, "max_invalid_fraction": float(limit)},
        )

    users, movies = df["user_id"].nunique(), df["movie_id"].nunique()
    if df.empty:
        raise dg.Failure(
            f"no usable ratings in {ratings_db.safe_url()} ({report.rows_read} rows read, "
            f"dropped: {report.dropped}); import ratings first (`recsys demo-data` or "
            "`recsys import-movielens PATH`)"
        )
    if report.rows_kept < config.min_ratings or users < config.min_users:
        raise dg.Failure(
            f"too few ratings to cross-validate and train: {report.rows_kept} ratings from "
            f"{users} users, need at least {config.min_ratings} ratings and "
            f"{config.min_users} users"
        )

    metadata: dict[str, dg.RawMetadataValue] = {
        **counts,
        "users": users,
        "movies": movies,
        "rating_min": float(df["rating"].min()),
        "rating_mean": float(np.mean(df["rating"].to_numpy(), dtype=np.float64)),
        "rating_max": float(df["rating"].max()),
        "max_timestamp": int(df["timestamp"].max()),
        "read_seconds": read_seconds,
        "seconds": time.perf_counter() - start,
        "memory_mb": float(df.memory_usage(index=False).sum() / 2**20),
        "peak_rss_mb": peak_rss_mb(),
        "preview": dg.MetadataValue.md(markdown_table(df.head(10), floatfmt=".1f")),
    }
    return dg.Output(df, metadata=metadata)


def recorded_rating_scale(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float] | None:
    """The rating scale `ratings_df` cleaned with in run ``run_id`` (its `scale_min`/`scale_max`,
    run config or RECSYS_RATING_SCALE as they were then): what the data checks hold the ratings
    to and what the refresh cleans a champion's users with. None when that run holds none."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in records:
        materialization = record.asset_materialization
        if materialization is None or materialization.asset_key != RATINGS_DF:
            continue
        low = materialization.metadata.get("scale_min")
        high = materialization.metadata.get("scale_max")
        if low is not None and high is not None:
            return float(low.value), float(high.value)
    return None
