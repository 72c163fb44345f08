"""The embedded Dagster instance `recsys run` and `recsys ui` prepare (`cli.instance`).

It is Dagster's own SQLite storage (no event log class of the project's), with telemetry off,
one training run at a time and run monitoring on; a real webserver serves its runs.
"""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from recsys_assets.cli.instance import EMBEDDED_DAGSTER_YAML, prepare_dagster_home
from recsys_assets_tests.servers import REPO, Deployment, wait_for


@dg.asset
def numbers(context: dg.AssetExecutionContext) -> list[int]:
    context.log.info("making numbers")
    context.log.debug("debug detail")
    return [1, 2, 3]


@dg.asset
def total(numbers: list[int]) -> int:
    return sum(numbers)


def test_embedded_instance_is_dagsters_own_sqlite_storage(recsys_home):
    home = Path(prepare_dagster_home())
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    # Only documented instance settings: no storage class of the project's (or anyone's).
    assert set(config) == {
        "telemetry",
        "run_coordinator",
        "concurrency",
        "run_monitoring",
        "python_logs",
    }
    # The project's run queue: Dagster's QueuedRunCoordinator that tags training runs.
    assert config["run_coordinator"] == {
        "module": "recsys_assets.run_queue",
        "class": "TrainingRunQueue",
    }
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([numbers, total], instance=instance)
        assert result.success
        storage = instance.event_log_storage
        assert type(storage).__module__.startswith("dagster.")  # Dagster's default class
        records = storage.get_logs_for_run(result.run_id)
        events = [e.dagster_event.event_type_value for e in records if e.dagster_event]
        messages = [e.user_message for e in records if not e.dagster_event]
        latest = instance.get_latest_materialization_event(dg.AssetKey("total"))
    assert "ASSET_MATERIALIZATION" in events and events[-1] == "PIPELINE_SUCCESS"
    # Log lines from INFO up are stored; debug lines (the IO manager's, ours) are not, while
    # Dagster's own events (logged at DEBUG) all are.
    assert "making numbers" in messages
    assert not any("debug detail" in m or "Loading file from" in m for m in messages)
    assert "STEP_START" in events and "HANDLED_OUTPUT" in events
    assert latest is not None and latest.run_id == result.run_id
    # Dagster's layout: one SQLite file per run beside the index, under DAGSTER_HOME.
    assert (home / "history" / "runs" / f"{result.run_id}.db").is_file()


def test_old_generated_dagster_yaml_is_updated_and_a_custom_one_kept(recsys_home):
    home = recsys_home / "dagster_home"
    home.mkdir(parents=True)
    config = home / "dagster.yaml"
    # What an earlier version wrote: the project's own event log class, now gone.
    config.write_text(
        "# Embedded Dagster instance of recsys_assets: old\ntelemetry:\n  enabled: false\n"
        "event_log_storage:\n  module: recsys_assets.instance_storage\n"
        "  class: PooledSqliteEventLogStorage\n"
    )
    prepare_dagster_home()
    assert config.read_text() == EMBEDDED_DAGSTER_YAML
    with dg.DagsterInstance.get() as instance:  # loads: no reference to the removed module
        assert dg.materialize([numbers, total], instance=instance).success
    custom = "telemetry:\n  enabled: false\n"
    config.write_text(custom)
    prepare_dagster_home()
    assert config.read_text() == custom


@pytest.mark.integration
def test_webserver_shows_a_run_of_recsys_run(recsys_home, demo_db):
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


def test_embedded_and_deployed_instances_monitor_runs(recsys_home):
    """Dagster's run monitoring is on in both instance configs (a run stuck starting, canceling
    or running for hours is marked failed by the daemon), with the project's run queue."""
    prepare_dagster_home()
    with dg.DagsterInstance.get() as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == 3 * 3600
        assert instance.run_monitoring_start_timeout_seconds == 300
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
    deployed = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    assert deployed["run_monitoring"] == {
        "enabled": True,
        "start_timeout_seconds": 300,
        "cancel_timeout_seconds": 300,
        "max_runtime_seconds": 10800,
        "poll_interval_seconds": 60,
    }
    assert deployed["run_coordinator"]["class"] == "TrainingRunQueue"
