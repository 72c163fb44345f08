"""`retrain_on_new_ratings`: a sensor on `ratings` events that retrains or refreshes.

A plain `@dg.sensor` that reads the event log itself (public `DagsterInstance` API) and keeps
its own cursor: the storage id of the newest `ratings` event it has handled. Every `ratings`
materialization counts — the ones `ratings_db_sensor` reports and the ones an
application reports through Dagster's API. Per tick:

* Retrain (training_job) when the ratings changed since the last successful training reach
  the RetrainPolicy threshold, unless a training run is queued or running, or the last one
  started less than `min_interval_seconds` ago. The count comes from the event log, not from
  the sensor's cursor, so a deferred retrain happens on a later tick and a successful training
  (from any source: this sensor, the 02:00 schedule, the UI) resets it.
* And, in the same tick, rescore just the users named in the new events
  (refresh_predictions_job) with the current champion — also when a retrain is requested,
  running or deferred, so their new ratings show at once even if the retrain later fails.

Run keys embed the storage id of the newest `ratings` event (unique in the instance), so a
retried tick or a restarted daemon cannot start the same run twice, and never clashes with
an older run.
"""

import json
import time
from typing import NamedTuple

import dagster as dg
from dagster import DagsterRunStatus, RunsFilter

from recsys_assets.asset_keys import CHAMPION_MODEL, RATINGS, RATINGS_DF, USER_PREDICTIONS
from recsys_assets.assets.config import PredictionsConfig, training_run_config
from recsys_assets.jobs import refresh_predictions_job, training_job
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets.resources.retrain_policy import RetrainPolicy
from recsys_assets.run_liveness import fail_dead_runs
from recsys_assets.sensors.ratings_events import changed_ratings, user_ids
from recsys_assets.settings import Settings

ACTIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
# Events read per tick; far more than a day of one-per-minute sensor events.
EVENT_PAGE = 10_000


class TrainingMark(NamedTuple):
    """Where the current model's data ends in the event log, and how big its training set was."""

    storage_id: int
    trained_ratings: int | None
    run_id: str | None


def last_training_mark(instance: dg.DagsterInstance) -> TrainingMark:
    """The `ratings_df` read of the last run that promoted a model (`champion_model`).

    Ratings events after that read were not in the champion's training data. A candidate that
    failed its gates does not count as a successful training. Storage ids of asset
    materializations are comparable (one asset index, SQLite or PostgreSQL).
    """
    models = instance.fetch_materializations(CHAMPION_MODEL, limit=1).records
    if not models:
        return TrainingMark(0, None, None)
    model = models[0]
    read = _ratings_read_of(instance, model.run_id, model.storage_id)
    if read is None:
        return TrainingMark(model.storage_id, None, model.run_id)
    rows = read.asset_materialization.metadata.get("rows_kept")
    return TrainingMark(
        read.storage_id, int(rows.value) if rows is not None else None, model.run_id
    )


def _ratings_read_of(
    instance: dg.DagsterInstance, run_id: str, before: int
) -> dg.EventLogRecord | None:
    """The `ratings_df` materialization of run `run_id` (before storage id `before`), or None.

    Pages back from `before` however many reads other runs made since, and stops at reads
    older than the run (a run re-executed from a failure may reuse its parent's). The index's
    storage ids, not the run's own: those are what the ratings events are compared with.
    """
    runs = instance.get_run_records(RunsFilter(run_ids=[run_id]), limit=1)
    since = runs[0].create_timestamp.timestamp() if runs else None
    records_filter = dg.AssetRecordsFilter(asset_key=RATINGS_DF, before_storage_id=before)
    cursor = None
    while True:
        page = instance.fetch_materializations(records_filter, limit=100, cursor=cursor)
        for record in page.records:
            if record.run_id == run_id:
                return record
            if since is not None and record.timestamp < since:
                return None
        if not page.has_more:
            return None
        cursor = page.cursor


def current_top_n(instance: dg.DagsterInstance, default: int | None = None) -> int:
    """N of the predictions now in the table (latest user_predictions materialization), so a
    refresh keeps every user's list the same length."""
    records = instance.fetch_materializations(USER_PREDICTIONS, limit=1).records
    if records:
        value = records[0].asset_materialization.metadata.get("top_n")
        if value is not None and isinstance(value.value, int) and value.value > 0:
            return value.value
    return default if default is not None else PredictionsConfig().top_n


def _ratings_events_after(instance: dg.DagsterInstance, storage_id: int | None) -> list:
    """`ratings` materializations after `storage_id` (None: from the first), oldest first."""
    return list(
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RATINGS, after_storage_id=storage_id),
            limit=EVENT_PAGE,
            ascending=True,
        ).records
    )


def _now() -> float:
    """The sensor's clock: tests move it instead of waiting."""
    return time.time()


def _training_blocker(instance: dg.DagsterInstance, policy: RetrainPolicy) -> str | None:
    """Why a training run must not be requested now, or None.

    A run whose `recsys run` process died is marked failed first, so it never defers a
    retrain (daemon-launched runs are covered by Dagster's run monitoring).
    """
    fail_dead_runs(instance, job_name=training_job.name)
    active = instance.get_run_records(
        RunsFilter(job_name=training_job.name, statuses=ACTIVE_STATUSES), limit=1
    )
    if active:
        run = active[0].dagster_run
        return f"training run {run.run_id} is {run.status.value}"
    latest = instance.get_run_records(RunsFilter(job_name=training_job.name), limit=1)
    if latest and policy.min_interval_seconds > 0:
        age = _now() - latest[0].create_timestamp.timestamp()
        if age < policy.min_interval_seconds:
            return (
                f"last training run started {age:.0f}s ago, less than min_interval_seconds="
                f"{policy.min_interval_seconds}"
            )
    return None


def load_cursor(cursor: str | None) -> int | None:
    """The storage id of the last handled `ratings` event (None: nothing handled yet).

    Also reads the cursor this sensor kept while it was a `multi_asset_sensor` (JSON keyed by
    asset, `[partition, storage id, ...]`), so an upgraded deployment does not handle its
    events again.
    """
    if not cursor:
        return None
    if cursor.isdigit():
        return int(cursor)
    try:
        legacy = json.loads(cursor)
    except ValueError:
        return None
    for value in legacy.values() if isinstance(legacy, dict) else ():
        if isinstance(value, list) and len(value) > 1 and isinstance(value[1], int):
            return value[1]
    return None


def evaluate_retrain(
    context: dg.SensorEvaluationContext,
    retrain_policy: RetrainPolicy,
    model_store: ArtifactStore,
) -> dg.SensorResult:
    """This tick's run requests, or why there are none, with the cursor moved past the events
    it handled (the same cursor when there were none)."""
    instance = context.instance
    handled = load_cursor(context.cursor)
    new_events = _ratings_events_after(instance, handled)
    mark = last_training_mark(instance)
    pending_events = _ratings_events_after(instance, mark.storage_id)
    for record in new_events:
        _, warning = changed_ratings(record.asset_materialization.metadata)
        if warning:
            context.log.warning("ratings event %d: %s", record.storage_id, warning)
    pending = sum(changed_ratings(r.asset_materialization.metadata)[0] for r in pending_events)
    threshold = retrain_policy.threshold(mark.trained_ratings)
    # Every event read on this tick is handled by it (counted, and its users refreshed).
    last = new_events[-1].storage_id if new_events else handled
    cursor = str(last) if last is not None else None

    notes = [f"{pending} ratings changed since the last training (retrain at {threshold})"]
    requests: list[dg.RunRequest] = []
    if pending_events and pending >= threshold:
        blocker = _training_blocker(instance, retrain_policy)
        if blocker is None:
            newest = pending_events[-1].storage_id
            context.log.info("requesting training: %s", notes[0])
            requests.append(
                dg.RunRequest(
                    run_key=f"retrain-after-ratings-event-{newest}",
                    job_name=training_job.name,
                    run_config=training_run_config(n_epochs=retrain_policy.n_epochs),
                    tags={"recsys/trigger": "new_ratings", "recsys/new_ratings": str(pending)},
                )
            )
        else:
            notes.append(f"retrain deferred: {blocker}")

    # The users who just rated get their lists refreshed now with the current champion,
    # whatever happens to a retrain (requested, running, deferred, or failing its gates
    # later): otherwise they would keep seeing the movies they just rated.
    if new_events and retrain_policy.refresh_predictions:
        refresh = _refresh_request(context, new_events, model_store, notes)
        if refresh is not None:
            requests.append(refresh)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    return dg.SensorResult(skip_reason=dg.SkipReason("; ".join(notes)), cursor=cursor)


def _refresh_request(
    context: dg.SensorEvaluationContext,
    new_events: list,
    model_store: ArtifactStore,
    notes: list[str],
) -> dg.RunRequest | None:
    """refresh_predictions_job for the users named in `new_events`, or None (reason in notes)."""
    users: set[int] = set()
    for record in new_events:
        ids, warning = user_ids(record.asset_materialization.metadata)
        if warning:
            context.log.warning("ratings event %d: %s", record.storage_id, warning)
        users.update(ids)
    if not users:
        return None
    if model_store.latest_manifest() is None:
        notes.append("no trained model yet, so no predictions to refresh")
        return None
    context.log.info("requesting refresh of %d users; %s", len(users), "; ".join(notes))
    return dg.RunRequest(
        run_key=f"refresh-after-ratings-event-{new_events[-1].storage_id}",
        job_name=refresh_predictions_job.name,
        run_config={
            "ops": {
                "refresh_user_predictions": {
                    "config": {"user_ids": sorted(users), "top_n": current_top_n(context.instance)}
                }
            }
        },
        tags={"recsys/trigger": "new_ratings", "recsys/users": str(len(users))},
    )


def build_retrain_sensor(minimum_interval_seconds: int | None = None) -> dg.SensorDefinition:
    """The sensor, ticking every `minimum_interval_seconds` (RECSYS_SENSOR_INTERVAL_SECONDS)."""

    @dg.sensor(
        name="retrain_on_new_ratings",
        jobs=[training_job, refresh_predictions_job],
        minimum_interval_seconds=minimum_interval_seconds
        or Settings.from_env().sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="On new `ratings` events: retrain when enough ratings changed since the "
        "last training (RetrainPolicy), and refresh the predictions of the users who rated.",
    )
    def retrain_on_new_ratings(
        context: dg.SensorEvaluationContext,
        retrain_policy: RetrainPolicy,
        model_store: dg.ResourceParam[ArtifactStore],
    ) -> dg.SensorResult:
        return evaluate_retrain(context, retrain_policy, model_store)

    return retrain_on_new_ratings
