"""`retrain_on_new_ratings` against a real (temporary, SQLite) Dagster instance.

`ratings` events are stored exactly as the daemon stores the ratings sensor's events and as
the webserver stores an app's API report: `report_runless_asset_event`.
"""

import dagster as dg
import pandas as pd
import pytest

from recsys_assets.asset_keys import RATINGS
from recsys_assets.assets.config import training_run_config
from recsys_assets.assets.ratings import ratings
from recsys_assets.definitions import all_assets, all_checks
from recsys_assets.jobs import refresh_predictions_job, training_job
from recsys_assets.resources.retrain_policy import RetrainPolicy
from recsys_assets.sensors.retrain_sensor import _training_blocker, build_retrain_sensor
from recsys_assets_tests.assets.test_gates import BAD_SVD
from recsys_assets_tests.conftest import FAST_CONFIG, make_resources

SENSOR = build_retrain_sensor()


class Harness:
    """An instance, definitions with test resources, and the sensor's cursor between ticks."""

    def __init__(self, instance, home, database, policy):
        self.instance = instance
        self.resources = {**make_resources(home, database), "retrain_policy": policy}
        self.defs = dg.Definitions(
            assets=[ratings, *all_assets],
            jobs=[training_job, refresh_predictions_job],
            sensors=[SENSOR],
            resources=self.resources,
        )
        self.cursor = None

    def report(self, **metadata):
        self.instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=RATINGS, metadata=metadata)
        )

    def tick(self):
        """One tick as the daemon evaluates it: the run requests, or the skip reason."""
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            definitions=self.defs,
            resources=self.resources,
        )
        data = SENSOR.evaluate_tick(context)
        self.cursor = data.cursor  # what the daemon persists after the tick
        return list(data.run_requests) or dg.SkipReason(data.skip_message)

    def train(self, run_config=FAST_CONFIG, tags=None):
        result = self.defs.resolve_job_def("training_job").execute_in_process(
            run_config=run_config, instance=self.instance, tags=tags
        )
        assert result.success
        return result


@pytest.fixture
def harness(recsys_home, demo_db):
    policy = RetrainPolicy(min_new_ratings=100, min_interval_seconds=0)
    with dg.instance_for_test() as instance:
        yield Harness(instance, recsys_home, demo_db, policy)


def _only(requests):
    assert isinstance(requests, list) and len(requests) == 1, requests
    return requests[0]


def _by_job(requests):
    """{job name: request}: a retrain comes with a refresh of the users who just rated."""
    assert isinstance(requests, list), requests
    jobs = {r.job_name: r for r in requests}
    assert len(jobs) == len(requests)
    return jobs


def test_no_events_no_runs(harness):
    assert isinstance(harness.tick(), dg.SkipReason)


def test_below_threshold_refreshes_the_users_then_nothing_twice(harness):
    harness.train()
    harness.report(new_ratings=3, user_ids=dg.MetadataValue.json([5, 7]))
    request = _only(harness.tick())
    assert request.job_name == "refresh_predictions_job"
    config = request.run_config["ops"]["refresh_user_predictions"]["config"]
    # Same users, same list length as the predictions in the table (FAST_CONFIG: top 10).
    assert config == {"user_ids": [5, 7], "top_n": 10}
    # The same events are never handled twice.
    second = harness.tick()
    assert isinstance(second, dg.SkipReason)
    assert "3 ratings changed since the last training (retrain at 100)" in second.skip_message


def test_no_model_yet_means_no_refresh(harness):
    harness.report(new_ratings=3, user_ids=[5])
    result = harness.tick()
    assert isinstance(result, dg.SkipReason) and "no trained model yet" in result.skip_message


def test_above_threshold_one_training_run_then_reset_after_success(harness):
    harness.train()
    harness.report(new_ratings=60, user_ids=[1])
    assert _only(harness.tick()).job_name == "refresh_predictions_job"
    harness.report(new_ratings=40, user_ids=[2])
    requests = _by_job(harness.tick())
    assert set(requests) == {"training_job", "refresh_predictions_job"}
    request = requests["training_job"]
    assert request.tags["recsys/new_ratings"] == "100"
    # The user who just rated gets a refresh now, whatever becomes of the retrain.
    refresh = requests["refresh_predictions_job"].run_config["ops"]["refresh_user_predictions"]
    assert refresh["config"]["user_ids"] == [2]
    # The sensor's retrain: the job's defaults (a search) with the policy's epochs (20).
    assert request.run_config == training_run_config(n_epochs=20)

    # No new event: a tick before the run exists asks again with the same run key, which
    # the daemon drops as a duplicate...
    again = harness.tick()
    assert _only(again).run_key == request.run_key
    # ...and once the run exists (here: started), the sensor does not ask at all.
    harness.instance.create_run_for_job(
        harness.defs.resolve_job_def("training_job"),
        run_config=request.run_config,
        tags={**request.tags, "dagster/sensor_name": "retrain_on_new_ratings"},
        status=dg.DagsterRunStatus.STARTED,
    )
    running = harness.tick()
    assert isinstance(running, dg.SkipReason) and "is STARTED" in running.skip_message

    # Run keys embed the newest event's storage id, so a later burst gets a new key.
    harness.report(new_ratings=500, user_ids=[3])
    refresh = _only(harness.tick())  # training still running: refresh only
    assert refresh.job_name == "refresh_predictions_job"


def test_successful_training_resets_the_count(harness):
    harness.train()
    harness.report(new_ratings=150, user_ids=[1])
    assert set(_by_job(harness.tick())) == {"training_job", "refresh_predictions_job"}
    harness.train()
    result = harness.tick()
    assert isinstance(result, dg.SkipReason)
    assert "0 ratings changed since the last training" in result.skip_message
    # New ratings after that training start counting from zero.
    harness.report(new_ratings=99, user_ids=[2])
    assert _only(harness.tick()).job_name == "refresh_predictions_job"
    harness.report(new_ratings=1, user_ids=[2])
    assert set(_by_job(harness.tick())) == {"training_job", "refresh_predictions_job"}


def test_minimum_interval_defers_training_and_refreshes_meanwhile(harness):
    harness.train()
    harness.resources["retrain_policy"] = RetrainPolicy(
        min_new_ratings=10, min_interval_seconds=3600
    )
    harness.report(new_ratings=50, user_ids=[4])
    request = _only(harness.tick())
    assert request.job_name == "refresh_predictions_job"


def test_fraction_threshold_uses_the_trained_size(harness):
    trained = harness.train()
    rows = trained.asset_materializations_for_node("ratings_df")[0].metadata["rows_kept"].value
    harness.resources["retrain_policy"] = RetrainPolicy(
        min_new_ratings=1_000_000, min_new_fraction=0.01, min_interval_seconds=0
    )
    harness.report(new_ratings=int(rows * 0.01) + 1)
    assert _only(harness.tick()).job_name == "training_job"


def test_app_event_without_a_count_counts_as_one(harness):
    harness.train()
    harness.resources["retrain_policy"] = RetrainPolicy(min_new_ratings=1, min_interval_seconds=0)
    harness.report(source="app")
    assert _only(harness.tick()).job_name == "training_job"


def test_env_overrides(monkeypatch):
    monkeypatch.setenv("RECSYS_RETRAIN_MIN_NEW_RATINGS", "25")
    monkeypatch.setenv("RECSYS_RETRAIN_MIN_INTERVAL_SECONDS", "0")
    policy = RetrainPolicy.from_env()
    assert (policy.min_new_ratings, policy.min_interval_seconds) == (25, 0)
    monkeypatch.setenv("RECSYS_RETRAIN_MIN_NEW_RATINGS", "lots")
    with pytest.raises(ValueError, match="RECSYS_RETRAIN_MIN_NEW_RATINGS='lots' is not a valid"):
        RetrainPolicy.from_env()


def test_sensor_ratings_events_end_to_end(harness, demo_db):
    """The polling sensor's events, stored as the daemon stores them, drive the refresh."""
    from recsys_assets.sensors.ratings_db_sensor import build_ratings_db_sensor

    poller = build_ratings_db_sensor()
    harness.train()

    def poll(cursor):
        context = dg.build_sensor_context(
            instance=harness.instance, cursor=cursor, resources={"ratings_db": demo_db}
        )
        result = poller(context)
        for event in result.asset_events:
            harness.instance.report_runless_asset_event(event)
        return result.cursor

    cursor = poll(None)
    demo_db.insert_ratings(
        pd.DataFrame(
            {"user_id": [11, 12], "movie_id": [1, 1], "rating": [4.0, 2.0], "timestamp": 1}
        )
    )
    poll(cursor)
    request = _only(harness.tick())
    assert request.job_name == "refresh_predictions_job"
    assert request.run_config["ops"]["refresh_user_predictions"]["config"]["user_ids"] == [11, 12]


def test_deferred_training_requested_on_a_tick_without_new_events(harness):
    """As the daemon evaluates it (`evaluate_tick`): a training request on a tick with no new
    ratings event (the retrain was deferred, now unblocked) must update the cursor, or Dagster
    fails the tick."""
    harness.train()
    harness.report(new_ratings=150, user_ids=[1])
    first = _by_job(harness.tick())["training_job"]
    context = dg.build_sensor_context(
        instance=harness.instance,
        cursor=harness.cursor,
        definitions=harness.defs,
        resources=harness.resources,
    )
    data = SENSOR.evaluate_tick(context)
    assert [r.job_name for r in data.run_requests] == ["training_job"]
    assert data.run_requests[0].run_key == first.run_key  # the daemon drops the duplicate


def test_users_who_rated_are_refreshed_when_the_retrain_fails(harness, demo_db):
    """The retrain the new ratings trigger fails its gates: the refresh requested on the same
    tick still gives those users lists without the movies they just rated."""
    harness.train()
    champion = harness.resources["model_store"].latest_manifest()["version"]
    user = 3
    rated_before = set(demo_db.read_user_ratings([user])["movie_id"])
    suggested = demo_db.read_predictions(user_id=user)["movie_id"].tolist()
    newly_rated = [m for m in suggested[:3] if m not in rated_before]
    assert newly_rated
    demo_db.insert_ratings(
        pd.DataFrame({"user_id": user, "movie_id": newly_rated, "rating": 4.0, "timestamp": 9})
    )
    harness.report(new_ratings=150, user_ids=[user])
    requests = _by_job(harness.tick())
    assert set(requests) == {"training_job", "refresh_predictions_job"}
    # The retrain fails its gate (a model worse than BaselineOnly) and promotes nothing.
    failed = dg.materialize(
        [*all_assets, *all_checks],
        resources=harness.resources,
        run_config=training_run_config(n_folds=4, top_n=10, tuning="fixed", **BAD_SVD),
        instance=harness.instance,
        raise_on_error=False,
    )
    assert not failed.success
    assert harness.resources["model_store"].latest_manifest()["version"] == champion
    refresh = requests["refresh_predictions_job"]
    result = harness.defs.resolve_job_def("refresh_predictions_job").execute_in_process(
        run_config=refresh.run_config, instance=harness.instance
    )
    assert result.success
    after = demo_db.read_predictions(user_id=user)
    assert len(after) == 10 and set(after["model_version"]) == {champion}
    assert not set(after["movie_id"]) & set(newly_rated)


def test_candidate_that_failed_the_gates_does_not_reset_the_count(harness):
    from recsys_assets.definitions import all_checks
    from recsys_assets_tests.assets.test_gates import config

    harness.train()
    harness.report(new_ratings=150, user_ids=[1])
    assert set(_by_job(harness.tick())) == {"training_job", "refresh_predictions_job"}
    failed = dg.materialize(  # the graph with its gates, as training_job runs it
        [*all_assets, *all_checks],
        resources=harness.resources,
        run_config=config(BAD_SVD),
        instance=harness.instance,
        raise_on_error=False,
    )
    assert not failed.success  # trained, saved, but not promoted
    assert "model_artifact" in {
        e.asset_key.to_user_string()
        for e in failed.get_asset_materialization_events()
        for e in [e.event_specific_data.materialization]
    }
    request = _only(harness.tick())
    assert request.job_name == "training_job"
    assert request.tags["recsys/new_ratings"] == "150"


def test_deferred_retrain_becomes_due_after_the_minimum_interval(harness, monkeypatch):
    from recsys_assets.sensors import retrain_sensor

    harness.train()
    (last,) = harness.instance.get_run_records(limit=1)
    started = last.create_timestamp.timestamp()
    harness.resources["retrain_policy"] = RetrainPolicy(
        min_new_ratings=10, min_interval_seconds=3600
    )
    # The sensor's clock, moved by hand: one second before the interval ends, then at its end.
    monkeypatch.setattr(retrain_sensor, "_now", lambda: started + 3599)
    harness.report(new_ratings=50, user_ids=[4])
    deferred = _only(harness.tick())
    assert deferred.job_name == "refresh_predictions_job"  # retrain deferred meanwhile
    monkeypatch.setattr(retrain_sensor, "_now", lambda: started + 3600)
    due = _only(harness.tick())  # no new event: the deferred retrain is requested now
    assert due.job_name == "training_job"
    assert due.tags["recsys/new_ratings"] == "50"


def test_the_mark_is_the_champions_read_however_many_reads_came_after(harness):
    from recsys_assets.asset_keys import RATINGS_DF
    from recsys_assets.sensors.retrain_sensor import last_training_mark

    trained = harness.train()
    (read,) = trained.asset_materializations_for_node("ratings_df")
    (record,) = harness.instance.fetch_materializations(RATINGS_DF, limit=1).records
    # Reads of other runs that promoted nothing (failed gates, ratings_df alone), more than
    # any fixed look-back.
    for _ in range(25):
        harness.instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=RATINGS_DF, metadata={"rows_kept": 7})
        )
    mark = last_training_mark(harness.instance)
    assert mark.run_id == trained.run_id
    assert mark.storage_id == record.storage_id
    assert mark.trained_ratings == read.metadata["rows_kept"].value


def test_run_whose_process_died_is_failed_and_never_defers_a_retrain(harness):
    import subprocess
    import sys

    from recsys_assets.run_liveness import process_tags

    harness.train()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    tags = {**process_tags(), "recsys/pid": str(proc.pid)}  # a `recsys run` that was killed
    stuck = harness.instance.create_run_for_job(
        harness.defs.resolve_job_def("training_job"),
        run_config=FAST_CONFIG,
        tags=tags,
        status=dg.DagsterRunStatus.STARTED,
    )
    alive = harness.instance.create_run_for_job(
        harness.defs.resolve_job_def("training_job"),
        run_config=FAST_CONFIG,
        tags=process_tags(),  # this process: alive
        status=dg.DagsterRunStatus.STARTED,
    )
    harness.report(new_ratings=150, user_ids=[1])
    result = harness.tick()
    assert harness.instance.get_run_by_id(stuck.run_id).status == dg.DagsterRunStatus.FAILURE
    # The live run still defers the retrain (refresh only), and is named as the reason.
    assert _only(result).job_name == "refresh_predictions_job"
    blocker = _training_blocker(harness.instance, harness.resources["retrain_policy"])
    assert blocker == f"training run {alive.run_id} is STARTED"
    harness.instance.report_run_failed(alive, "test over")
    assert _only(harness.tick()).job_name == "training_job"


def test_cursor_is_the_newest_handled_event_and_an_old_cursor_is_honoured(harness):
    harness.train()
    harness.report(new_ratings=3, user_ids=[5])
    assert _only(harness.tick()).job_name == "refresh_predictions_job"
    newest = harness.instance.fetch_materializations(RATINGS, limit=1).records[0].storage_id
    assert harness.cursor == str(newest)
    # What the sensor kept while it was a multi_asset_sensor, written by Dagster itself: a
    # daemon upgraded to this version does not handle the same events again.
    legacy = dg.build_multi_asset_sensor_context(
        monitored_assets=[RATINGS],
        instance=harness.instance,
        definitions=harness.defs,
        cursor_from_latest_materializations=True,
    ).cursor
    assert legacy != str(newest)
    harness.cursor = legacy
    assert isinstance(harness.tick(), dg.SkipReason)
    assert harness.cursor == str(newest)
    harness.report(new_ratings=2, user_ids=[6])
    request = _only(harness.tick())
    assert request.run_config["ops"]["refresh_user_predictions"]["config"]["user_ids"] == [6]
