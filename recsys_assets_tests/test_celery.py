"""The training job on Dagster's Celery executor: a real redis-server and a real Celery worker.

Both are started here on loopback (free ports, temp dirs) and stopped at the end, pass or fail.
`.ci/run` installs the Debian `redis-server` package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from recsys_assets import definitions
from recsys_assets.assets.config import training_run_config
from recsys_assets_tests.conftest import FAST_SVD
from recsys_assets_tests.servers import PortTaken, on_free_port, port_taken

REDIS = shutil.which("redis-server")
pytestmark = [
    pytest.mark.integration,
    # Under CI (.ci/run installs redis-server) a missing server is a failure, not a skip.
    pytest.mark.skipif(
        REDIS is None and not os.environ.get("CI"), reason="needs redis-server (apt-get install)"
    ),
]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:  # exited: lost the port to another process?
            output = log.read_text(errors="replace")
            if port_taken(output):
                raise PortTaken(f"port {port}")
            raise RuntimeError(f"redis-server exited: {output[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process group we started (worker + its pool), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _descendants(pid: int) -> set[int]:
    """pid and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo.extend(children.get(p, []))
    return found


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    if REDIS is None:
        pytest.fail("redis-server is not installed (CI is set, so this is a failure)")
    procs: list[subprocess.Popen] = []

    def start(port: int) -> int:
        log = tmp_path / f"redis-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [REDIS, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
                + ["--appendonly", "no"],
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.append(proc)
        try:
            _wait_for_port(port, proc, log)
        except PortTaken:
            _stop(proc)
            raise
        return port

    port = on_free_port(start, "redis-server")
    proc = procs[-1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


@pytest.fixture
def celery_env(recsys_home: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    dagster_home = recsys_home / "dagster_home"
    dagster_home.mkdir(parents=True)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("RECSYS_EXECUTOR", "celery")
    monkeypatch.setenv("RECSYS_CELERY_BROKER_URL", redis_url)
    return dagster_home


@pytest.fixture
def celery_worker(celery_env: Path, redis_url: str, tmp_path: Path) -> Iterator[subprocess.Popen]:
    # The worker gets the same environment (RECSYS_*, DAGSTER_HOME) as the launching process:
    # it re-imports recsys_assets.definitions and writes events to the same instance.
    config = tmp_path / "celery.yaml"
    config.write_text(f"execution:\n  config:\n    broker: {redis_url}\n    backend: {redis_url}\n")
    log = (tmp_path / "worker.log").open("wb")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(
        [
            str(bin_dir / "dagster-celery"),
            "worker",
            "start",
            "-A",
            "dagster_celery.app",
            "-y",
            str(config),
            "-n",
            "recsys-test-worker",
            "--",
            "--concurrency=2",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        _stop(proc)
        log.close()


def _fold_steps(result) -> dict[str, dict]:
    out = {}
    for event in result.all_events:
        if event.is_successful_output and event.step_key.startswith("cv_report.cv_fold["):
            meta = event.step_output_data.metadata
            out[event.step_key] = {k: v.value for k, v in meta.items()}
    return out


# A small hyperparameter search: its candidates are Celery tasks too.
SEARCH_CONFIG = training_run_config(
    n_folds=4,
    top_n=10,
    **FAST_SVD,
    param_grid={"n_factors": [2.0, 5.0], "n_epochs": [30.0], "lr_all": [0.02], "reg_all": [0.1]},
    n_iter=1,
    min_rung_ratings=100,
)


def test_training_job_runs_folds_on_celery_worker(demo_db, celery_worker, tmp_path):
    with dg.DagsterInstance.get() as instance:
        with dg.execute_job(
            # As `recsys run` builds it; the executor comes from RECSYS_EXECUTOR=celery.
            dg.build_reconstructable_job(
                definitions.__name__, definitions.build_training_job.__name__
            ),
            instance=instance,
            run_config=SEARCH_CONFIG,
            raise_on_error=False,
        ) as result:
            log = (tmp_path / "worker.log").read_text(errors="replace")
            assert result.success, log[-3000:]
            folds = _fold_steps(result)
            delegated = [
                e.step_key
                for e in result.all_events
                if e.event_type_value == "ENGINE_EVENT" and "in celery worker" in (e.message or "")
            ]
            celery_cv = result.asset_materializations_for_node("cv_report")[0].metadata
    celery_predictions = demo_db.read_predictions()

    # One step per fold, each executed by the worker we started (not by this process).
    assert sorted(folds) == [f"cv_report.cv_fold[folds_{k}]" for k in range(1, 5)]
    worker_tree = _descendants(celery_worker.pid)
    for key, meta in folds.items():
        assert meta["pid"] != os.getpid()
        assert meta["pid"] in worker_tree, (key, meta["pid"], worker_tree)
        assert key in delegated
    # The search's candidates too: one step each (the seed's configuration and c1).
    assert {
        "svd_hyperparameters.search_fit_1[rung1_seed]",
        "svd_hyperparameters.search_fit_1[rung1_c1]",
    } <= set(delegated)

    # The same job in process gives the same numbers and the same predictions.
    local = definitions.build_defs(executor="in_process").resolve_job_def("training_job")
    result = local.execute_in_process(run_config=SEARCH_CONFIG)
    local_cv = result.asset_materializations_for_node("cv_report")[0].metadata
    for name in ("rmse_mean", "mae_mean", "rmse_std"):
        assert celery_cv[name].value == local_cv[name].value
    local_predictions = demo_db.read_predictions()
    columns = ["user_id", "movie_id", "rank", "score"]
    assert len(local_predictions) > 0
    pd.testing.assert_frame_equal(celery_predictions[columns], local_predictions[columns])
    assert celery_predictions["model_version"].iloc[0] != local_predictions["model_version"].iloc[0]
