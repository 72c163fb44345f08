"""Recompute `user_predictions` for a few users with the current `latest` model, no retraining.

The seed refreshed a user's suggestions after every few of that user's ratings. This op does
the same for the users the sensors saw rating something, ranked exactly like `user_predictions`
(the champion's ranking policy, most-popular for cold-start users): their rated movies (read
fresh from the database, so the new ratings count; also those rated without a value) are
excluded, other users' rows stay.
"""

import time

import dagster as dg
import numpy as np
from pydantic import Field

from recsys_assets.asset_keys import USER_PREDICTIONS
from recsys_assets.assets.config import PredictionsConfig, RatingsConfig
from recsys_assets.assets.ratings import recorded_rating_scale
from recsys_assets.assets.retries import db_retry_policy, retry_only_transient_db_errors
from recsys_assets.data.cleaning import clean_ratings
from recsys_assets.db import RatingsStore
from recsys_assets.ml.artifacts import ArtifactStore, NoModelError
from recsys_assets.ml.model_bundle import bundle_of
from recsys_assets.ml.ranking import rank_users
from recsys_assets.settings import Settings


class RefreshPredictionsConfig(PredictionsConfig):
    """`user_predictions`' `top_n` and `block_size`, for these users only."""

    user_ids: list[int] = Field(description="Users whose top-N suggestions are recomputed.")


@dg.op(retry_policy=db_retry_policy(), tags={"kind": "numpy"})
def refresh_user_predictions(
    context: dg.OpExecutionContext,
    config: RefreshPredictionsConfig,
    ratings_db: dg.ResourceParam[RatingsStore],
    model_store: dg.ResourceParam[ArtifactStore],
) -> None:
    """Rescore `config.user_ids` with `latest` and replace only their rows in user_predictions."""
    with retry_only_transient_db_errors(context):
        _refresh(context, config, ratings_db, model_store)


def _training_scale(context: dg.OpExecutionContext, manifest: dict) -> tuple[float, float]:
    """The rating scale the champion was trained with: its run's `ratings_df` read records it
    (run config or RECSYS_RATING_SCALE as they were then). A champion whose run this instance
    does not hold (another instance, a model from before the scale was recorded) is cleaned
    with the scale the next training would use."""
    run_id = manifest.get("dagster_run_id")
    recorded = recorded_rating_scale(context.instance, run_id) if run_id else None
    if recorded is not None:
        return recorded
    scale = RatingsConfig().rating_scale(Settings.from_env())
    context.log.warning(
        "the rating scale champion %s was trained with is not recorded in this instance (run "
        "%s); cleaning with the current one, %g–%g",
        manifest.get("version"),
        run_id,
        *scale,
    )
    return scale


def _refresh(
    context: dg.OpExecutionContext,
    config: RefreshPredictionsConfig,
    ratings_db: RatingsStore,
    model_store: ArtifactStore,
) -> None:
    users = np.array(sorted(set(config.user_ids)), dtype=np.int64)
    if users.size == 0:
        raise dg.Failure("refresh_predictions_job needs at least one user id in `user_ids`")
    if config.top_n < 1:
        raise dg.Failure(f"top_n must be >= 1, got {config.top_n}")
    start = time.perf_counter()
    try:
        model, manifest = model_store.load_latest()
    except NoModelError as exc:
        raise dg.Failure(
            f"no trained model to refresh predictions with ({exc}); run training_job first"
        ) from exc
    try:
        bundle = bundle_of(model, manifest)
        # Models saved before artifacts were compacted lack the training counts; the current
        # ratings stand in, as in user_predictions.
        current = None if bundle.counts is not None else ratings_db.read_ratings()["movie_id"]
        shipped = bundle.shipped(None if current is None else current.to_numpy())
    except ValueError as exc:
        raise dg.Failure(f"champion {manifest['version']}: {exc}") from exc
    del model, bundle
    # The same cleaning as the ratings_df that trained the champion, so taste vectors and the
    # cold-start cut-off match a full run for these users.
    scale = _training_scale(context, manifest)
    raw = ratings_db.read_user_ratings(users.tolist())
    rated, _ = clean_ratings(raw, scale)
    # Rated without a value: not trained on, but never suggested (as in user_predictions).
    unrated = raw[raw["rating"].isna()]
    predictions = rank_users(
        shipped,
        users,
        (rated["user_id"].to_numpy(), rated["movie_id"].to_numpy()),
        n=config.top_n,
        excluded=(unrated["user_id"].to_numpy(), unrated["movie_id"].to_numpy()),
        block_size=config.block_size,
    )
    rows = ratings_db.replace_predictions(predictions, manifest["version"], users=users.tolist())
    seconds = time.perf_counter() - start
    context.log.info(
        "refreshed %d rows for %d users with model %s in %.2fs",
        rows,
        len(users),
        manifest["version"],
        seconds,
    )
    context.log_event(
        dg.AssetMaterialization(
            asset_key=USER_PREDICTIONS,
            description=f"incremental refresh of {len(users)} users (no retraining)",
            metadata={
                "mode": "incremental",
                "users": len(users),
                "rows": rows,
                "table": "user_predictions",
                "model_version": manifest["version"],
                "top_n": config.top_n,
                "seconds": seconds,
                "user_ids": dg.MetadataValue.json(users[:1000].tolist()),
            },
        )
    )
