"""`user_predictions`: top-N unseen movies per user, written to the app database."""

import time

import dagster as dg
import pandas as pd

from recsys_assets.asset_keys import CHAMPION_MODEL, FALLBACK_PREDICTIONS, USER_PREDICTIONS
from recsys_assets.assets.artifact import champion_model
from recsys_assets.assets.config import PredictionsConfig
from recsys_assets.assets.metadata import peak_rss_mb
from recsys_assets.assets.retries import db_retry_policy, retry_only_transient_db_errors
from recsys_assets.db import RatingsStore
from recsys_assets.ml.arrays import unique
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets.ml.model_bundle import bundle_of
from recsys_assets.ml.ranking import SOURCE_EASE, SOURCE_POPULAR, SOURCE_SVD, rank_users
from recsys_assets.ml.ranking.popular import most_popular

# `model_version` of the rows `fallback_predictions` writes.
POPULAR_VERSION = "most-popular"


@dg.asset(group_name="serving", compute_kind="numpy", retry_policy=db_retry_policy())
def fallback_predictions(
    context: dg.AssetExecutionContext,
    config: PredictionsConfig,
    ratings_df: pd.DataFrame,
    model_store: dg.ResourceParam[ArtifactStore],
    ratings_db: dg.ResourceParam[RatingsStore],
) -> dg.MaterializeResult:
    """Never an empty shelf, never one from another model than the champion.

    Not downstream of the model, so it runs even when the candidate fails a gate (the
    blocking gates skip `champion_model` and `user_predictions`). With no champion it writes
    each user's most-rated unrated movies (`source='popular'`, `model_version='most-popular'`);
    `user_predictions` runs after it and replaces them as soon as a model passes the gates.
    With a champion whose suggestions are published it writes nothing. With a champion whose
    suggestions are not (an earlier `user_predictions` write failed after the promotion, or a
    `recsys models promote/rollback` since), it republishes them from the champion. A store
    that cannot tell its champion fails here and leaves the table alone.
    """
    champion = model_store.latest_manifest()  # raises for an unreadable store: never "none"
    if champion is not None:
        return _keep_or_republish(context, config, ratings_df, model_store, ratings_db, champion)
    with retry_only_transient_db_errors(context):
        start = time.perf_counter()
        # Movies a user marked without a rating are not suggested either (as user_predictions).
        unrated = ratings_db.read_unrated_pairs()
        frame = most_popular(
            ratings_df["user_id"].to_numpy(),
            ratings_df["movie_id"].to_numpy(),
            ratings_df["rating"].to_numpy(),
            n=config.top_n,
            excluded=(unrated["user_id"].to_numpy(), unrated["movie_id"].to_numpy()),
        )
        rows = ratings_db.replace_predictions(frame, POPULAR_VERSION)
    users = int(frame["user_id"].nunique())
    context.log.warning(
        "no champion model yet: wrote most-popular suggestions for all %d users (%d rows); "
        "the first model that passes the promotion gates replaces them",
        users,
        rows,
    )
    return dg.MaterializeResult(
        metadata={
            "published": True,
            "champion": "none",
            "users": users,
            "rows": rows,
            "model_version": POPULAR_VERSION,
            "seconds": time.perf_counter() - start,
        }
    )


def _keep_or_republish(
    context: dg.AssetExecutionContext,
    config: PredictionsConfig,
    ratings_df: pd.DataFrame,
    model_store: ArtifactStore,
    ratings_db: RatingsStore,
    champion: dict,
) -> dg.MaterializeResult:
    version = champion["version"]
    held = published_version(context.instance)
    if held == version or _promoted_in_this_run(context):
        # Promoted in this run: user_predictions, which runs next, publishes it.
        context.log.info("champion %s serves the suggestions; nothing to do", version)
        return dg.MaterializeResult(
            metadata={
                "published": False,
                "champion": version,
                "users": 0,
                "model_version": held or "unknown",
            }
        )
    context.log.warning(
        "user_predictions holds the suggestions of %s, not of the champion %s: republishing",
        held or "an unknown model",
        version,
    )
    with retry_only_transient_db_errors(context):
        result = _write_user_predictions(context, config, ratings_df, model_store, ratings_db)
    return dg.MaterializeResult(
        metadata={
            **(result.metadata or {}),
            "published": True,
            "champion": version,
            "replaced_model_version": held or "unknown",
        }
    )


def published_version(instance: dg.DagsterInstance) -> str | None:
    """The model version `user_predictions` holds, per the newest materialization of the two
    assets that write the whole table (both record it as `model_version` after their write
    committed); None when unknown. A write killed after its commit but before its event was
    stored reads as the older version: the next run republishes once, never the reverse."""
    events = [
        e
        for e in instance.get_latest_materialization_events(
            [USER_PREDICTIONS, FALLBACK_PREDICTIONS]
        ).values()
        if e is not None
    ]
    for event in sorted(events, key=lambda e: e.timestamp, reverse=True):
        version = event.asset_materialization.metadata.get("model_version")
        if version is not None and version.value != "unknown":
            return str(version.value)
    return None


def _promoted_in_this_run(context: dg.AssetExecutionContext) -> bool:
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    return any(r.asset_key == CHAMPION_MODEL for r in records)


@dg.asset(
    group_name="serving",
    compute_kind="numpy",
    # After the fallback: a promoted model's suggestions replace the most-popular shelf.
    deps=[champion_model, fallback_predictions],
    retry_policy=db_retry_policy(),
)
def user_predictions(
    context: dg.AssetExecutionContext,
    config: PredictionsConfig,
    ratings_df: pd.DataFrame,
    model_store: dg.ResourceParam[ArtifactStore],
    ratings_db: dg.ResourceParam[RatingsStore],
) -> dg.MaterializeResult:
    """Table `user_predictions(user_id, movie_id, rank, score, model_version, created_at, source)`.

    Always from the champion (the model `latest` points to, verified before unpickling), so a
    candidate that failed its gates never reaches users. Ranked by the champion's shipped list:
    the EASE ranking model (`source='ease'`) or the SVD's popularity/taste blend
    (`source='svd'`), whichever ranked better on validation; users with too few ratings get the
    most-popular list (`source='popular'`). `score` is always the SVD's predicted rating. Movies
    a user rated (with a value or, as an active NULL row, without) are never suggested to them.
    The previous set is replaced in one transaction.
    """
    with retry_only_transient_db_errors(context):
        return _write_user_predictions(context, config, ratings_df, model_store, ratings_db)


def _write_user_predictions(
    context: dg.AssetExecutionContext,
    config: PredictionsConfig,
    ratings_df: pd.DataFrame,
    model_store: ArtifactStore,
    ratings_db: RatingsStore,
) -> dg.MaterializeResult:
    start = time.perf_counter()
    model, manifest = model_store.load_latest()
    try:
        # Models saved before artifacts were compacted lack the training counts: the current
        # ratings stand in.
        shipped = bundle_of(model, manifest).shipped(ratings_df["movie_id"].to_numpy())
    except ValueError as exc:
        raise dg.Failure(f"champion {manifest['version']}: {exc}") from exc
    del model
    factors, policy = shipped.factors, shipped.policy
    users = unique(ratings_df["user_id"].to_numpy())
    # Movies a user rated without a value are not trained on, but they are not "unseen" either.
    unrated = ratings_db.read_unrated_pairs()
    predictions = rank_users(
        shipped,
        users,
        (ratings_df["user_id"].to_numpy(), ratings_df["movie_id"].to_numpy()),
        n=config.top_n,
        excluded=(unrated["user_id"].to_numpy(), unrated["movie_id"].to_numpy()),
        block_size=config.block_size,
    )
    score_seconds = time.perf_counter() - start
    context.log.info(
        "ranked %d users × %d movies with model %s (%s) in %.2fs",
        len(users),
        factors.n_items,
        manifest["version"],
        policy,
        score_seconds,
    )
    write_start = time.perf_counter()
    rows = ratings_db.replace_predictions(predictions, manifest["version"])
    write_seconds = time.perf_counter() - write_start
    seconds = time.perf_counter() - start
    pairs = len(users) * factors.n_items
    by_source = predictions.groupby("source")["user_id"].nunique()
    context.log.info("wrote %d rows for %d users in %.2fs", rows, len(users), write_seconds)
    return dg.MaterializeResult(
        metadata={
            "users": len(users),
            "users_svd": int(by_source.get(SOURCE_SVD, 0)),
            "users_popular": int(by_source.get(SOURCE_POPULAR, 0)),
            "users_ease": int(by_source.get(SOURCE_EASE, 0)),
            "shipped_list": policy.ranker,
            "rows": rows,
            "excluded_unrated_pairs": len(unrated),
            "table": "user_predictions",
            "model_version": manifest["version"],
            "ranking_policy": dg.MetadataValue.json(policy.as_dict()),
            "top_n": config.top_n,
            "score_seconds": score_seconds,
            "write_seconds": write_seconds,
            "seconds": seconds,
            "pairs_scored": pairs,
            "pairs_per_second": pairs / seconds if seconds > 0 else 0.0,
            "peak_rss_mb": peak_rss_mb(),
        }
    )
