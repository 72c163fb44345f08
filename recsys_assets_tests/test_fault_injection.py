"""kill -9 of a `recsys run` in the middle of the artifact write and of the predictions write.

The run is a real `recsys run` process; a small prelude (test code, in that process only)
makes the write stop halfway and the process SIGKILL itself, exactly as an OOM kill or a
`kill -9` would. Then: the dead run is marked failed (not STARTED forever), the next
`recsys run` succeeds, and nothing partial is left: no temp file, every version verifies,
`latest` loads, and every user's predictions come from the champion.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import dagster as dg
import pytest

from recsys_assets.db import RatingsStore
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets_tests.conftest import FAST_SVD

pytestmark = pytest.mark.slow

TOP_N = 5

# Test hyperparameters for `recsys run` (the CLI exposes only epochs/folds/top-n): small and
# fast, and on the demo fixture's data they beat BaselineOnly, so the gates pass.
PRELUDE = f"""
import recsys_assets.assets.config as config
_config = config.training_run_config
config.training_run_config = lambda **kw: _config(**{{**{FAST_SVD!r}, **kw}})
"""

KILL_IN_ARTIFACT_WRITE = """
import os, signal, tempfile
from recsys_assets.ml.artifacts import files
def half_written(path, data, exclusive=False):
    if str(path).endswith(".pkl"):
        fd, _ = tempfile.mkstemp(dir=path.parent, prefix=files.temp_prefix(path.name),
                                 suffix=".tmp")
        os.write(fd, data[: len(data) // 2])
        os.fsync(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    return _write(path, data, exclusive)
_write = files.atomic_write_bytes
files.atomic_write_bytes = half_written
"""

KILL_IN_PREDICTIONS_WRITE = """
import os, signal
from recsys_assets.db import bulk
def half_inserted(conn, table, frame, constants=None, chunk_rows=None):
    if table.name == "user_predictions":
        _insert(conn, table, frame.iloc[: len(frame) // 2], constants, chunk_rows)
        os.kill(os.getpid(), signal.SIGKILL)
    return _insert(conn, table, frame, constants, chunk_rows)
_insert = bulk.insert_frame
bulk.insert_frame = half_inserted
"""


def _recsys_run(home, fault: str = "") -> subprocess.CompletedProcess:
    argv = ["run", "--folds", "4", "--top-n", str(TOP_N), "--no-demo-data"]
    code = (
        PRELUDE
        + textwrap.dedent(fault)
        + f"\nfrom recsys_assets.cli import main\nraise SystemExit(main({argv!r}))\n"
    )
    env = {**os.environ, "RECSYS_HOME": str(home)}
    for var in ("RECSYS_DATABASE_URL", "DAGSTER_HOME", "RECSYS_SCHEMA", "RECSYS_IO_BASE"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )


def _runs(home):
    """Runs of the instance `recsys run` uses (RECSYS_HOME/dagster_home), newest first."""
    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home / "dagster_home")
    try:
        with dg.DagsterInstance.get() as instance:
            return [r.dagster_run for r in instance.get_run_records()]
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved


def _assert_consistent(home):
    models = home / "models" / "surprise"
    assert not [p.name for p in models.glob(".*.tmp")], "a temp file of a killed write is left"
    store = ArtifactStore(models)
    versions, broken = store.scan()
    assert not broken
    assert all(store.verify(m) is None for m in versions)
    _, champion = store.load_latest()
    table = RatingsStore.from_env().read_predictions()
    assert set(table["model_version"]) == {champion["version"]}
    assert (table.groupby("user_id").size() == TOP_N).all()


@pytest.mark.parametrize("fault", ["artifact", "predictions"])
def test_kill_9_mid_write_then_the_next_run_succeeds(recsys_home, demo_db, fault):
    first = _recsys_run(recsys_home)
    assert first.returncode == 0, first.stderr[-3000:]
    _assert_consistent(recsys_home)
    before = RatingsStore.from_env().read_predictions()

    script = KILL_IN_ARTIFACT_WRITE if fault == "artifact" else KILL_IN_PREDICTIONS_WRITE
    killed = _recsys_run(recsys_home, script)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert _runs(recsys_home)[0].status == dg.DagsterRunStatus.STARTED  # nobody told Dagster
    models = recsys_home / "models" / "surprise"
    if fault == "artifact":
        assert list(models.glob(".*.pkl.*.tmp")), "the fault did not hit the artifact write"
    # The killed predictions transaction never committed: readers still see the old table.
    after_kill = RatingsStore.from_env().read_predictions()
    assert after_kill.equals(before)

    again = _recsys_run(recsys_home)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "marked run" in again.stderr and "process is gone" in again.stderr
    statuses = [r.status for r in reversed(_runs(recsys_home))]
    assert statuses == [
        dg.DagsterRunStatus.SUCCESS,
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.SUCCESS,
    ]
    _assert_consistent(recsys_home)
