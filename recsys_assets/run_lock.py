"""One training at a time, whoever starts it.

* The Dagster instance is the one place that knows every run. A training run is one of
  `training_job` or of the asset graph (the UI's *Materialize all*: `__ASSET_JOB`); each
  carries the tag `recsys/job=training` — set by the job, by the run queue at submission
  (`run_queue.TrainingRunQueue`) or at its first step (`claim_training_slot`) — and the
  instance's run queue starts a queued one only while no other tagged run is in progress.
* Runs executed outside the queue (`recsys run`, `dagster asset materialize`,
  `dagster job execute`): `recsys run` waits for or refuses an in-progress training before it
  starts (`wait_for_training_slot`); every training run checks again at each step that uses
  the database (`claim_training_slot`) and fails there, before writing anything, if another
  training started before it. Of two runs that both got past the queue, the later one fails.
* `training_lock`: an advisory lock file per RECSYS_HOME that queues `recsys run`s behind each
  other. `flock` is released by the kernel when the holder exits, however it exits (kill -9
  included), so a crashed run never leaves a stale lock behind. The file's content only says
  who holds it, for the message a second run prints.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
from dagster import DagsterRunStatus, RunsFilter

# A run holds the training slot while unfinished: starting, started or canceling (the run
# queue counts the same statuses).
from recsys_assets.run_liveness import PID_TAG, UNFINISHED, fail_dead_runs

LOCK_NAME = "training.lock"

# Run tag the instance's run queue limits to one at a time (deploy/dagster.yaml); the retrain
# sensor also looks for it.
JOB_TAG = "recsys/job"
TRAINING = "training"
TRAINING_TAGS = {JOB_TAG: TRAINING}
TRAINING_JOB = "training_job"
# Dagster's implicit job of the asset graph: the UI's *Materialize all*, `dagster asset
# materialize`. Every materializable asset here is part of the training graph.
ASSET_JOB_PREFIX = "__ASSET_JOB"
POLL_SECONDS = 2.0


class TrainingLockBusy(RuntimeError):
    """Another training is in progress (a `recsys run` with the same RECSYS_HOME, or any run
    in the Dagster instance)."""


def is_training_run(run: dg.DagsterRun) -> bool:
    """A run of the training graph, whichever job and launch path it came from."""
    return (
        run.tags.get(JOB_TAG) == TRAINING
        or run.job_name == TRAINING_JOB
        or run.job_name.startswith(ASSET_JOB_PREFIX)
    )


def training_runs_in_progress(
    instance: dg.DagsterInstance, exclude_run_id: str | None = None
) -> list[dg.RunRecord]:
    """Training runs starting, running or canceling, oldest first (runs whose `recsys run`
    process died are marked failed first and not listed)."""
    fail_dead_runs(instance)
    records = instance.get_run_records(RunsFilter(statuses=UNFINISHED), ascending=True)
    return [
        r
        for r in records
        if is_training_run(r.dagster_run) and r.dagster_run.run_id != exclude_run_id
    ]


def describe_run(record: dg.RunRecord) -> str:
    """`run <id> (<how it was started>, <status>)`, for messages."""
    run = record.dagster_run
    tags = run.tags
    if "dagster/schedule_name" in tags:
        origin = f"schedule {tags['dagster/schedule_name']}"
    elif "dagster/sensor_name" in tags:
        origin = f"sensor {tags['dagster/sensor_name']}"
    elif PID_TAG in tags:
        origin = f"`recsys run` pid {tags[PID_TAG]}"
    else:
        origin = f"job {run.job_name}"
    return f"run {run.run_id} ({origin}, {run.status.value})"


def wait_for_training_slot(
    instance: dg.DagsterInstance,
    wait: bool = False,
    on_wait: Callable[[str], None] | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> None:
    """Return once no training run is in progress in `instance`; TrainingLockBusy naming
    the run if there is one and not `wait`. Queued runs do not count: they start only
    when the queue sees no training in progress (and a queue without a daemon never does)."""
    noted = None
    while busy := training_runs_in_progress(instance):
        names = ", ".join(describe_run(r) for r in busy)
        if not wait:
            raise TrainingLockBusy(
                f"training {names} is in progress in the Dagster instance "
                f"({instance.root_directory}); one training runs at a "
                "time: let it finish, or pass --wait to start after it"
            )
        if on_wait and names != noted:
            on_wait(f"waiting for training {names} to finish")
            noted = names
        time.sleep(poll_seconds)


def claim_training_slot(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Called by a training run's steps before they use the database: tag the run (so the
    run queue counts it even when it was executed outside the queue) and raise
    TrainingLockBusy naming the training that started before this one, if one is still in
    progress. Runs that are not trainings pass."""
    if not is_training_run(run):
        return
    if run.tags.get(JOB_TAG) != TRAINING:
        instance.add_run_tags(run.run_id, TRAINING_TAGS)
    mine = instance.get_run_record_by_id(run.run_id)
    my_start = mine.start_time if mine and mine.start_time else time.time()

    def started_before_me(record: dg.RunRecord) -> bool:
        # STARTING runs have not run a step yet: they will see this one when they do.
        if record.dagster_run.status == DagsterRunStatus.STARTING or record.start_time is None:
            return False
        return (record.start_time, record.dagster_run.run_id) < (my_start, run.run_id)

    earlier = [r for r in training_runs_in_progress(instance, run.run_id) if started_before_me(r)]
    if earlier:
        raise TrainingLockBusy(
            f"training {describe_run(earlier[0])} was already in progress when this run "
            f"started; one training runs at a time, so this run stops before writing anything"
        )


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 200).decode(errors="replace").strip()
    return text or "unknown process"


@contextlib.contextmanager
def training_lock(
    home: Path, wait: bool = False, on_wait: Callable[[str], None] | None = None
) -> Iterator[Path]:
    """Hold `<home>/training.lock` for the duration; refuse (TrainingLockBusy) or wait."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise TrainingLockBusy(
                    f"another `recsys run` ({holder}) is training with RECSYS_HOME={home} "
                    f"(lock {path}); let it finish, or pass --wait to queue behind it"
                ) from None
            if on_wait:
                on_wait(f"waiting for another `recsys run` ({holder}) to finish (lock {path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the lock
