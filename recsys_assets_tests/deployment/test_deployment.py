"""The production setup, for real: PostgreSQL instance storage and ratings DB, dagster-webserver
and dagster-daemon started from this project's workspace.yaml and deploy/dagster.yaml.

One scenario, in the order an operator would see it:
1. on the app's database (its tables only), a training run launched through GraphQL exactly
   as the UI's launchpad does, run by the daemon's run queue;
2. new ratings inserted into the PostgreSQL ratings DB → the ratings sensor reports them → the
   retrain sensor starts exactly one run refreshing those users' predictions;
3. the daemon restarts → sensor cursors are kept, no run is started twice;
4. the README's curl example (an app reporting new ratings) → exactly one training run.
"""

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from recsys_assets.assets.config import training_run_config
from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.db import RatingsStore
from recsys_assets_tests.app_database import app_checksums, make_app_database
from recsys_assets_tests.servers import LAUNCH, LOCATION, REPO, Deployment, Postgres, wait_for

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 420  # waiting, not asserting: two shared cores may be slow
# The seed's hyperparameters (as the schedule and the retrain sensor use them), top 10. On the
# data below the SVD clearly beats BaselineOnly, so the promotion gates pass.
TRAINING = training_run_config(n_epochs=20, n_folds=4, top_n=10)
RUNS = """
query Runs($job: String!) {
  runsOrError(filter: {pipelineName: $job}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""
SENSOR = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      sensorState {
        status
        typeSpecificData { ... on SensorData { lastCursor } }
        ticks(limit: 500) { id status timestamp error { message } }
      }
    }
  }
}"""


def _production_env(postgres: Postgres, root: Path) -> dict[str, str]:
    """The README's Production section's variables, for this throwaway server."""
    return dict(
        DAGSTER_HOME=str(root / "dagster_home"),
        DAGSTER_PG_HOST=postgres.host,
        DAGSTER_PG_PORT=str(postgres.port),
        DAGSTER_PG_DB="dagster",
        DAGSTER_PG_USERNAME=postgres.user,
        DAGSTER_PG_PASSWORD=postgres.password,
        RECSYS_HOME=str(root / "recsys"),
        RECSYS_DATABASE_URL=postgres.url("ratings"),
    )


def _readme_production_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Production", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "README's Production section lost its bash block"
    return match.group(1)


def test_readme_production_block_is_what_the_deployment_test_runs():
    block = _readme_production_block()
    exported = set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", block))
    assert exported == set(_production_env(Postgres("h", 1, "u", "p"), Path("/r")))
    assert 'cp deploy/dagster.yaml "$DAGSTER_HOME/"' in block
    # The commands Deployment starts (servers.py), with the README's host and port.
    assert "dagster-webserver -h 0.0.0.0 -p 3000 -w workspace.yaml" in block
    assert "dagster-daemon run -w workspace.yaml" in block


@pytest.fixture
def deployment(postgres):
    root = Path(tempfile.mkdtemp(prefix="recsys-deploy-"))
    (root / "dagster_home").mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "DAGSTER_"))}
    env.update(_production_env(postgres, root))
    env.update(
        RECSYS_SENSOR_INTERVAL_SECONDS="2",
        RECSYS_RETRAIN_MIN_NEW_RATINGS="50",
        RECSYS_RETRAIN_MIN_INTERVAL_SECONDS="0",
        RECSYS_DB_RETRY_DELAY_SECONDS="1",
    )
    # The app's database as the app made it: no project setup before the first run.
    movies, ratings = generate_demo_ratings(n_users=150, n_movies=200, n_ratings=15000, seed=3)
    make_app_database(postgres.url("ratings"), "native", movies, ratings)
    ratings_db = RatingsStore(postgres.url("ratings"))
    deploy = Deployment(env, root)
    try:
        deploy.start()
        yield deploy, ratings_db
    finally:
        deploy.stop()
        ratings_db.engine().dispose()
        shutil.rmtree(root, ignore_errors=True)


def _runs(deploy: Deployment, job: str) -> list[dict]:
    runs = deploy.graphql(RUNS, {"job": job})["runsOrError"]["results"]
    for run in runs:
        run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
    return runs


def _wait_finished(deploy: Deployment, job: str, count: int) -> list[dict]:
    """Wait until `job` has `count` runs, all finished; fail at once if one failed."""

    def finished():
        runs = _runs(deploy, job)
        failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
        if failed:
            raise AssertionError(f"{job} run failed: {failed}\n{deploy.diagnostics()}")
        if len(runs) >= count and all(r["status"] == "SUCCESS" for r in runs):
            return runs
        return None

    return wait_for(finished, RUN_TIMEOUT, f"{count} successful {job} run(s)", deploy.diagnostics)


def _sensor(deploy: Deployment, name: str) -> dict:
    data = deploy.graphql(SENSOR, {"selector": {**LOCATION, "sensorName": name}})
    state = data["sensorOrError"]["sensorState"]
    return {
        "status": state["status"],
        "cursor": state["typeSpecificData"]["lastCursor"],
        "ticks": state["ticks"],
    }


def _readme_curl_example() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- api-example -->\s*```bash\n(.*?)```", text, re.S)
    assert match, "README lost its API example block"
    return match.group(1)


def test_deployment_end_to_end(deployment):
    deploy, ratings_db = deployment

    # 1. Launch the whole graph through GraphQL, as the UI's launchpad does, on a database
    #    without user_predictions: the run creates it and changes none of the app's tables.
    app_tables = app_checksums(ratings_db.url, "native")
    launched = deploy.graphql(
        LAUNCH,
        {
            "executionParams": {
                "selector": {**LOCATION, "jobName": "training_job"},
                "runConfigData": TRAINING,
                "mode": "default",
                "executionMetadata": {"tags": [{"key": "launched_by", "value": "test"}]},
            }
        },
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    (first,) = _wait_finished(deploy, "training_job", 1)
    assert first["runId"] == launched["run"]["runId"]
    assert first["tags"]["recsys/job"] == "training"  # the run queue's concurrency key
    assert app_checksums(ratings_db.url, "native") == app_tables
    before = ratings_db.read_predictions()
    all_ratings = ratings_db.read_ratings()
    rated = all_ratings.groupby("user_id")["movie_id"].nunique()
    # Every user who has not rated every movie gets suggestions (heavy demo users rated all).
    assert set(before["user_id"]) == set(rated[rated < all_ratings["movie_id"].nunique()].index)

    # 2. The sensors are on by default; wait for the ratings sensor's baseline, then rate.
    wait_for(
        lambda: _sensor(deploy, "ratings_db_sensor")["cursor"],
        RUN_TIMEOUT,
        "the ratings sensor's first tick",
        deploy.diagnostics,
    )
    user = int(rated.idxmin())  # plenty of unrated movies left after rating three more
    top_movies = before[before["user_id"] == user]["movie_id"].head(3).tolist()
    ratings_db.insert_ratings(
        pd.DataFrame(
            {"user_id": user, "movie_id": top_movies, "rating": 4.0, "timestamp": 2_000_000_000}
        )
    )
    (refresh,) = _wait_finished(deploy, "refresh_predictions_job", 1)
    assert refresh["tags"]["dagster/sensor_name"] == "retrain_on_new_ratings"
    after = ratings_db.read_predictions()
    mine = after[after["user_id"] == user]
    assert len(mine) == 10 and not set(top_movies) & set(mine["movie_id"])
    others = after[after["user_id"] != user].reset_index(drop=True)
    pd.testing.assert_frame_equal(others, before[before["user_id"] != user].reset_index(drop=True))
    assert len(_runs(deploy, "training_job")) == 1  # 3 new ratings: below the threshold of 50

    # 3. Restart the daemon: cursors survive in PostgreSQL, nothing runs twice.
    cursors = {
        n: _sensor(deploy, n)["cursor"] for n in ("ratings_db_sensor", "retrain_on_new_ratings")
    }
    deploy.daemon.stop()
    restarted_at = time.time()
    deploy.daemon.start()

    def ticked_twice_since_restart():
        return all(
            sum(t["timestamp"] > restarted_at for t in _sensor(deploy, n)["ticks"]) >= 2
            for n in cursors
        )

    wait_for(
        ticked_twice_since_restart,
        RUN_TIMEOUT,
        "sensor ticks after the restart",
        deploy.diagnostics,
    )
    for name, cursor in cursors.items():
        assert _sensor(deploy, name)["cursor"] == cursor, name
    assert len(_runs(deploy, "refresh_predictions_job")) == 1
    assert len(_runs(deploy, "training_job")) == 1

    # 4. An app reports new ratings itself (the README's curl example): one training run.
    env = {**os.environ, "DAGSTER_URL": deploy.url}
    subprocess.run(["bash", "-euo", "pipefail", "-c", _readme_curl_example()], env=env, check=True)
    runs = _wait_finished(deploy, "training_job", 2)
    triggered = [r for r in runs if r["tags"].get("recsys/trigger") == "new_ratings"]
    assert len(triggered) == 1 and triggered[0]["tags"]["dagster/sensor_name"] == (
        "retrain_on_new_ratings"
    )
    # After the run, later ticks see the count reset: still exactly one triggered training.
    done_at = time.time()
    wait_for(
        lambda: (
            sum(
                t["timestamp"] > done_at for t in _sensor(deploy, "retrain_on_new_ratings")["ticks"]
            )
            >= 2
        ),
        RUN_TIMEOUT,
        "retrain sensor ticks after the API-triggered training",
        deploy.diagnostics,
    )
    assert len(_runs(deploy, "training_job")) == 2
    # The README example also names users: they are refreshed at once too, beside the retrain.
    assert len(_runs(deploy, "refresh_predictions_job")) == 2
    failed_ticks = [
        t for n in cursors for t in _sensor(deploy, n)["ticks"] if t["status"] == "FAILURE"
    ]
    assert not failed_ticks, failed_ticks
