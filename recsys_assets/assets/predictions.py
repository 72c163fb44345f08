"""`user_predictions`: top-N unseen movies per user, written to the app database."""

import time

import dagster as dg
import pandas as pd

from recsys_assets.asset_keys import CHAMPION_MODEL, MODEL_ARTIFACT, USER_PREDICTIONS
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

# `model_version` of the most-popular shelf's rows.
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
    blocking gates skip `champion_model` and `user_predictions`). With no champion, users get
    their most-rated unrated movies (`source='popular'`, `model_version='most-popular'`):
    written here when the run does not hold the promotion gates with `champion_model` and
    `user_predictions`; when it does, the run either publishes the candidate's lists or fails
    a gate, and then the gates' step writes the shelf, so it is not written here only to be
    replaced minutes later. With a champion whose suggestions the table holds it writes
    nothing. With a champion whose suggestions it does not hold (an earlier `user_predictions`
    write failed after the promotion, or a `recsys models promote/rollback` since), it
    republishes them from the champion. A store that cannot tell its champion fails here and
    leaves the table alone.
    """
    champion = model_store.latest_manifest()  # raises for an unreadable store: never "none"
    if champion is not None:
        return _keep_or_republish(context, config, ratings_df, model_store, ratings_db, champion)
    if gates_publish_the_shelf(context.instance, context.run.run_id):
        with retry_only_transient_db_errors(context):
            held = held_version(ratings_db)
        context.log.info(
            "no champion model yet: the most-popular shelf waits for this run's promotion "
            "gates (the candidate's lists replace it if they pass; the gates' step writes it if "
            "one fails)"
        )
        return dg.MaterializeResult(
            metadata={
                "published": False,
                "deferred": True,
                "champion": "none",
                "users": 0,
                "model_version": held or "unknown",
                "reason": "deferred to model_artifact_gates: this run publishes the "
                "candidate's lists or, if a gate fails, the most-popular shelf",
            }
        )
    with retry_only_transient_db_errors(context):
        metadata = write_popular_shelf(context.log, config.top_n, ratings_df, ratings_db)
    return dg.MaterializeResult(metadata=metadata)


def write_popular_shelf(
    log: dg.DagsterLogManager, top_n: int, ratings_df: pd.DataFrame, ratings_db: RatingsStore
) -> dict[str, object]:
    """Replace the table with each user's `top_n` most-rated unrated movies; the metadata of
    `fallback_predictions` that says so (written here or by the gates' step)."""
    start = time.perf_counter()
    # Movies a user marked without a rating are not suggested either (as user_predictions).
    unrated = ratings_db.read_unrated_pairs()
    frame = most_popular(
        ratings_df["user_id"].to_numpy(),
        ratings_df["movie_id"].to_numpy(),
        ratings_df["rating"].to_numpy(),
        n=top_n,
        excluded=(unrated["user_id"].to_numpy(), unrated["movie_id"].to_numpy()),
    )
    rows = ratings_db.replace_predictions(frame, POPULAR_VERSION)
    users = int(frame["user_id"].nunique())
    log.warning(
        "no champion model yet: wrote most-popular suggestions for all %d users (%d rows); "
        "the first model that passes the promotion gates replaces them",
        users,
        rows,
    )
    return {
        "published": True,
        "champion": "none",
        "users": users,
        "rows": rows,
        "model_version": POPULAR_VERSION,
        "seconds": time.perf_counter() - start,
    }


def gates_publish_the_shelf(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether this run plans the promotion gates (the checks on `model_artifact`),
    `champion_model` and `user_predictions`: then, with no champion, it publishes either the
    candidate's lists or, when a gate fails, the most-popular shelf from the gates' step.
    From the run's planned events, so a job, a subset picked in the UI, `materialize` and a
    re-execution all answer for what they will run."""
    records = instance.get_records_for_run(
        run_id,
        of_type={
            dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
        },
    ).records
    assets, gates = set(), False
    for record in records:
        event = record.event_log_entry.dagster_event
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
            gates = gates or event.event_specific_data.asset_key == MODEL_ARTIFACT
        else:
            assets.add(event.asset_key)
    return gates and {CHAMPION_MODEL, USER_PREDICTIONS} <= assets


def held_version(ratings_db: RatingsStore) -> str | None:
    """The model version every row of `user_predictions` is from, read from the table; None
    when it is empty, missing or mixed (e.g. a refresh with a new champion over an older
    model's set). Read from the table, not the event log, as the table is what users see:
    whichever step wrote it (this asset, `user_predictions`, the gates' step, the refresh op)
    and whatever happened since (a write killed before its event was stored)."""
    versions = ratings_db.prediction_versions(limit=2)
    return versions[0] if len(versions) == 1 else None


def _keep_or_republish(
    context: dg.AssetExecutionContext,
    config: PredictionsConfig,
    ratings_df: pd.DataFrame,
    model_store: ArtifactStore,
    ratings_db: RatingsStore,
    champion: dict,
) -> dg.MaterializeResult:
    version = champion["version"]
    with retry_only_transient_db_errors(context):
        held = held_version(ratings_db)
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
