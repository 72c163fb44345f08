"""The embedded instance's event log (`instance_storage.PooledSqliteEventLogStorage`).

It must be Dagster's SQLite event log in everything but connection handling: same files,
readable by Dagster's own class and by a real webserver, bounded engines, wipe and dispose.
"""

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from recsys_assets import instance_storage
from recsys_assets.instance_storage import PooledSqliteEventLogStorage
from recsys_assets.runner import _EMBEDDED_DAGSTER_YAML, prepare_dagster_home
from recsys_assets_tests.servers import Deployment, wait_for


@dg.asset
def numbers(context: dg.AssetExecutionContext) -> list[int]:
    context.log.info("making numbers")
    return [1, 2, 3]


@dg.asset
def total(numbers: list[int]) -> int:
    return sum(numbers)


def _run(instance: dg.DagsterInstance) -> str:
    result = dg.materialize([numbers, total], instance=instance)
    assert result.success
    return result.run_id


def _event_types(storage, run_id: str) -> list[str]:
    return [
        e.dagster_event.event_type_value
        for e in storage.get_logs_for_run(run_id)
        if e.dagster_event
    ]


def test_embedded_instance_uses_it_and_dagster_reads_the_same_files(recsys_home):
    home = Path(prepare_dagster_home())
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        run_id = _run(instance)
        ours = _event_types(instance.event_log_storage, run_id)
        latest = instance.get_latest_materialization_event(dg.AssetKey("total"))
        assert latest is not None and latest.run_id == run_id
    assert "ASSET_MATERIALIZATION" in ours and ours[-1] == "PIPELINE_SUCCESS"
    # Dagster's own class on the same directory sees exactly the same events.
    stock = SqliteEventLogStorage(str(home / "history" / "runs"))
    assert _event_types(stock, run_id) == ours
    (record,) = stock.get_asset_records([dg.AssetKey("total")])
    assert record.asset_entry.last_materialization.run_id == run_id


def test_engines_stay_bounded_and_every_run_stays_readable(recsys_home, monkeypatch):
    monkeypatch.setattr(instance_storage, "MAX_ENGINES", 3)
    prepare_dagster_home()
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        run_ids = [_run(instance) for _ in range(5)]
        assert len(storage._engines) <= 3
        for run_id in run_ids:  # evicted engines are re-created on demand
            assert _event_types(storage, run_id)[-1] == "PIPELINE_SUCCESS"
        storage.wipe()
        # No connection outlives the unlinked files (the new index is opened afresh).
        assert set(storage._engines) <= {"index"}
        assert storage.get_logs_for_run(run_ids[0]) == []
        _run(instance)  # usable after a wipe


def test_old_generated_dagster_yaml_is_updated_and_a_custom_one_kept(recsys_home, monkeypatch):
    home = recsys_home / "dagster_home"
    home.mkdir(parents=True)
    config = home / "dagster.yaml"
    config.write_text("# Embedded Dagster instance of recsys_assets: old\ntelemetry:\n")
    prepare_dagster_home()
    assert config.read_text() == _EMBEDDED_DAGSTER_YAML
    custom = "telemetry:\n  enabled: false\n"
    config.write_text(custom)
    prepare_dagster_home()
    assert config.read_text() == custom


@pytest.mark.integration
def test_webserver_shows_a_run_stored_by_it(recsys_home, demo_db):
    """A real dagster-webserver on the embedded instance serves a `recsys run`'s event log."""
    import os

    from recsys_assets.cli import main

    assert main(["run", "--n-epochs", "5", "--top-n", "5"]) in (0, 1)
    env = {**os.environ, "DAGSTER_HOME": str(recsys_home / "dagster_home")}
    deploy = Deployment(env, recsys_home)
    try:
        deploy.start_webserver()
        deploy.wait_ready()
        runs = deploy.graphql("{ runsOrError { ... on Runs { results { runId status } } } }")
        (run,) = runs["runsOrError"]["results"]
        query = (
            "query($id: ID!) { logsForRun(runId: $id) { __typename ... on EventConnection "
            "{ events { __typename ... on MessageEvent { stepKey } } } } }"
        )

        def logs() -> list[dict]:
            return deploy.graphql(query, {"id": run["runId"]})["logsForRun"]["events"]

        events = wait_for(logs, 60, "the run's events", deploy.diagnostics)
        kinds = {e["__typename"] for e in events}
        assert "MaterializationEvent" in kinds and "ExecutionStepSuccessEvent" in kinds
        assert {e["stepKey"] for e in events} >= {"ratings_df", "svd_model", "cv_report.cv_summary"}
    finally:
        deploy.stop()


def test_embedded_and_deployed_instances_monitor_runs(recsys_home, monkeypatch):
    """Dagster's run monitoring is on in both instance configs (a run stuck starting, canceling
    or running for hours is marked failed by the daemon)."""
    import yaml

    from recsys_assets_tests.servers import REPO

    prepare_dagster_home()
    with dg.DagsterInstance.get() as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == 6 * 3600
        assert instance.run_monitoring_start_timeout_seconds == 300
    deployed = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    assert deployed["run_monitoring"] == {
        "enabled": True,
        "start_timeout_seconds": 300,
        "cancel_timeout_seconds": 300,
        "max_runtime_seconds": 21600,
        "poll_interval_seconds": 60,
    }
