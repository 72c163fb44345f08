"""Dagster is the front door: from a database the app made (its own tables only, no project
setup), a training run works whoever starts it — `dagster asset materialize`, the UI's
*Materialize all* (GraphQL), the retrain sensor — and only one training runs at a time, the
daemon's runs against `recsys run`'s. The app's tables are checksummed before and after.

One webserver + daemon for the module, on the embedded instance's dagster.yaml (what
`recsys ui` / `dagster dev` use): SQLite run storage and a SQLite app database with the
django preset. The PostgreSQL instance and a native app database on PostgreSQL are in
test_deployment.py; `dagster asset materialize` runs here on both backends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from recsys_assets.cli.instance import EMBEDDED_DAGSTER_YAML
from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.definitions import all_assets
from recsys_assets_tests.app_database import app_checksums, make_app_database, prediction_rows
from recsys_assets_tests.conftest import FAST_CONFIG
from recsys_assets_tests.servers import BIN, REPO, Deployment, GraphQLHTTPError, wait_for

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 420  # waiting, not asserting: two shared cores may be slow
MOVIES, RATINGS = generate_demo_ratings(n_users=150, n_movies=200, n_ratings=15000, seed=3)


def _env(root: Path, url: str, preset: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "DAGSTER_"))}
    (root / "dagster_home").mkdir(parents=True, exist_ok=True)
    env.update(
        DAGSTER_HOME=str(root / "dagster_home"),
        RECSYS_HOME=str(root / "recsys"),
        RECSYS_DATABASE_URL=url,
        RECSYS_SCHEMA=preset,
    )
    return env


@pytest.fixture(params=[("sqlite", "native"), ("postgresql", "django")], ids=lambda p: "-".join(p))
def app_database(request, tmp_path: Path):
    backend, preset = request.param
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        server = request.getfixturevalue("postgres")
        name = f"app_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')  # generated name, not input
        admin.dispose()
        url = server.url(name)
    make_app_database(url, preset, MOVIES, RATINGS)
    return url, preset


def test_dagster_asset_materialize_on_an_app_database(app_database, tmp_path: Path):
    url, preset = app_database
    before = app_checksums(url, preset)
    env = _env(tmp_path, url, preset)
    env["RECSYS_EXECUTOR"] = "in_process"  # the same steps, without a process per step
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "recsys_assets.definitions"]
    cmd += ["--select", "*", "--config-json", json.dumps(FAST_CONFIG)]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert prediction_rows(url) > 0
    assert app_checksums(url, preset) == before


# --- webserver + daemon on the embedded instance -------------------------------------------


@pytest.fixture(scope="module")
def deployment():
    root = Path(tempfile.mkdtemp(prefix="recsys-front-"))
    url = f"sqlite:///{root / 'app.db'}"
    make_app_database(url, "django", MOVIES, RATINGS)
    env = _env(root, url, "django")
    (root / "dagster_home" / "dagster.yaml").write_text(EMBEDDED_DAGSTER_YAML)
    env.update(
        RECSYS_SENSOR_INTERVAL_SECONDS="2",
        RECSYS_RETRAIN_MIN_NEW_RATINGS="50",
        RECSYS_RETRAIN_MIN_INTERVAL_SECONDS="0",
        RECSYS_DB_RETRY_DELAY_SECONDS="1",
        # Daemon runs in one process each, as `recsys run`'s: fewer processes on two shared
        # cores (test_deployment.py runs the default, multiprocess).
        RECSYS_EXECUTOR="in_process",
    )
    deploy = Deployment(env, root)
    try:
        deploy.start()
        yield deploy, url
    finally:
        deploy.stop()
        shutil.rmtree(root, ignore_errors=True)


def _finished(deploy: Deployment, run_ids: list[str]) -> dict[str, dict]:
    def all_succeeded():
        runs = deploy.runs()
        bad = [
            runs[r] for r in run_ids if r in runs and runs[r]["status"] in ("FAILURE", "CANCELED")
        ]
        if bad:
            raise AssertionError(f"run failed: {bad}\n{deploy.diagnostics()}")
        done = all(r in runs and runs[r]["status"] == "SUCCESS" for r in run_ids)
        return runs if done else None

    return wait_for(all_succeeded, RUN_TIMEOUT, f"runs {run_ids} to succeed", deploy.diagnostics)


def _in_progress(deploy: Deployment, run_id: str) -> None:
    def started():
        run = deploy.runs().get(run_id)
        if run and run["status"] in ("FAILURE", "CANCELED", "SUCCESS"):
            raise AssertionError(f"run ended before the check: {run}\n{deploy.diagnostics()}")
        return run and run["status"] == "STARTED"

    wait_for(started, RUN_TIMEOUT, f"run {run_id} to start", deploy.diagnostics)


def _apart(first: dict, second: dict) -> None:
    """The second run started after the first ended: no overlap of their windows."""
    assert first["endTime"] <= second["startTime"], (first, second)


def test_materialize_all_and_the_sensor_from_a_clean_app_database(deployment):
    deploy, url = deployment
    before = app_checksums(url, "django")
    assert not sa.inspect(sa.create_engine(url)).has_table("user_predictions")

    # The UI's "Materialize all": Dagster's implicit asset job over every asset.
    keys = [key.path for asset in all_assets for key in asset.keys]
    everything = deploy.launch("__ASSET_JOB", {}, asset_selection=keys)  # the defaults
    # The app reports new ratings (the README's REST call): the retrain sensor asks for a
    # training run, which waits in the queue until "Materialize all" is done.
    subprocess.run(
        [
            "curl", "-sS", "--fail-with-body", "-X", "POST",
            f"{deploy.url}/report_asset_materialization/ratings",
            "-H", "Content-Type: application/json",
            "-d", json.dumps({"metadata": {"new_ratings": 60}}),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip

    def sensor_run():
        runs = deploy.runs()
        return [r for r in runs if runs[r]["tags"].get("dagster/sensor_name")]

    (retrain,) = wait_for(sensor_run, RUN_TIMEOUT, "the sensor's training run", deploy.diagnostics)
    runs = _finished(deploy, [everything, retrain])
    assert runs[everything]["tags"]["recsys/job"] == "training"  # tagged by the run queue
    assert runs[retrain]["jobName"] == "training_job"
    _apart(runs[everything], runs[retrain])
    assert prediction_rows(url) > 0
    assert app_checksums(url, "django") == before


def _worker_pid(deploy: Deployment, run_id: str) -> int:
    """The pid of the process that runs `run_id` (its RUN_START event's)."""
    with dg.DagsterInstance.from_config(deploy.env["DAGSTER_HOME"]) as instance:
        (entry,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)
    return int(entry.dagster_event.pid)


HEARTBEATS = """
{ instance { daemonHealth { allDaemonStatuses { daemonType lastHeartbeatTime } } } }"""


def _queue_looked_twice(deploy: Deployment, since: float) -> Callable[[], bool]:
    """A check: the run queue's daemon has gone over the queue twice since `since` (two of
    its heartbeats, which it sends after each pass)."""
    beats: set[float] = set()

    def check() -> bool:
        data = deploy.graphql(HEARTBEATS)["instance"]["daemonHealth"]["allDaemonStatuses"]
        (queue,) = [d for d in data if d["daemonType"] == "QUEUED_RUN_COORDINATOR"]
        if (queue["lastHeartbeatTime"] or 0) > since:
            beats.add(queue["lastHeartbeatTime"])
        return len(beats) >= 2

    return check


def _launch_while_paused(deploy, pid: int, attempts: int = 5) -> str:
    """Launch `training_job` with process `pid` paused (SIGSTOP; left paused on return).

    A process paused inside a write to the SQLite instance holds its lock, and the launch then
    fails with "database is locked": resume it for a moment and try again; any other error
    is raised."""
    for attempt in range(attempts):
        os.kill(pid, signal.SIGSTOP)
        try:
            return deploy.launch("training_job", {})
        except GraphQLHTTPError as exc:
            if "locked" not in exc.body or attempt == attempts - 1:
                raise
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.5)
    raise AssertionError("not reached")


def test_one_training_at_a_time_daemon_and_recsys_run(deployment):
    deploy, url = deployment
    before = app_checksums(url, "django")
    env = deploy.env
    recsys = str(BIN / "recsys")

    # `recsys run` while the daemon trains (its worker paused, so it stays in progress):
    # refused, naming the run.
    daemon_run = deploy.launch("training_job", {})
    _in_progress(deploy, daemon_run)
    worker = _worker_pid(deploy, daemon_run)
    os.kill(worker, signal.SIGSTOP)
    try:
        refused = subprocess.run(
            [recsys, "run", "--no-demo-data"], env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        # A killed run worker: the run is failed promptly (not after run monitoring's 3 h).
        os.kill(worker, signal.SIGKILL)
    assert refused.returncode == 2, refused.stderr
    assert f"training run {daemon_run} (job training_job, STARTED)" in refused.stderr
    wait_for(
        lambda: deploy.runs()[daemon_run]["status"] == "FAILURE",
        RUN_TIMEOUT,
        "the killed run to be marked failed",
        deploy.diagnostics,
    )

    # A training launched while `recsys run` trains waits in the queue until it is done.
    cli = subprocess.Popen(
        [recsys, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:

        def cli_run():
            runs = deploy.runs().values()
            mine = [r for r in runs if r["tags"].get("recsys/pid") == str(cli.pid)]
            if cli.poll() is not None and not mine:
                raise AssertionError(f"recsys run exited: {cli.communicate()}")
            return [r["runId"] for r in mine if r["status"] == "STARTED"]

        (cli_run_id,) = wait_for(cli_run, RUN_TIMEOUT, "the recsys run run", deploy.diagnostics)
        # Paused, its training stays in progress while we look.
        launched_at = time.time()
        queued = _launch_while_paused(deploy, cli.pid)
        wait_for(
            _queue_looked_twice(deploy, launched_at),
            RUN_TIMEOUT,
            "the run queue to look at the new run",
            deploy.diagnostics,
        )
        assert deploy.runs()[queued]["status"] == "QUEUED"
        os.kill(cli.pid, signal.SIGCONT)
        out, err = cli.communicate(timeout=RUN_TIMEOUT)
    finally:
        if cli.poll() is None:
            os.kill(cli.pid, signal.SIGCONT)
            cli.kill()
    assert cli.returncode == 0, out + err
    runs = _finished(deploy, [cli_run_id, queued])
    assert runs[cli_run_id]["tags"]["recsys/job"] == "training"
    _apart(runs[cli_run_id], runs[queued])
    assert app_checksums(url, "django") == before
