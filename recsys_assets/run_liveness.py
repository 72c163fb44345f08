"""Runs whose process died: detected from the run's tags and marked failed.

`recsys run` executes the job in its own process and tags the run with that process (pid,
host, start time). If the process is killed, Dagster never hears the run end and the run
stays STARTED; `fail_dead_runs` (called by the next `recsys run` and by the retrain sensor)
sees the process is gone and reports the run failed through the instance. Runs launched by
the daemon are watched by Dagster's run monitoring instead (`run_monitoring` in dagster.yaml).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg
from dagster import DagsterRunStatus, RunsFilter

PID_TAG = "recsys/pid"
HOST_TAG = "recsys/host"
# The process's start time (clock ticks since boot, /proc/<pid>/stat): a reused pid has a
# different one, so a new process with the old pid does not keep a dead run alive.
START_TAG = "recsys/process_start"
UNFINISHED = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def _process_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22, counted after the ")" that ends the command name (which may contain spaces).
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    """Tags naming this process, for a run executed in it."""
    pid = os.getpid()
    tags = {PID_TAG: str(pid), HOST_TAG: socket.gethostname()}
    start = _process_start(pid)
    if start is not None:
        tags[START_TAG] = start
    return tags


def process_gone(tags: dict[str, str]) -> bool:
    """True when the tags name a process on this host that no longer exists."""
    pid, host = tags.get(PID_TAG), tags.get(HOST_TAG)
    if not pid or not pid.isdigit() or host != socket.gethostname():
        return False  # not ours to judge: another host, or a run without the tags
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    start = tags.get(START_TAG)
    return start is not None and _process_start(int(pid)) not in (None, start)


def fail_dead_runs(instance: dg.DagsterInstance, job_name: str | None = None) -> list[str]:
    """Mark unfinished runs whose process is gone as failed; return their run ids."""
    records = instance.get_run_records(RunsFilter(job_name=job_name, statuses=UNFINISHED))
    failed = []
    for record in records:
        run = record.dagster_run
        if not process_gone(run.tags):
            continue
        instance.report_run_failed(
            run,
            f"the process that ran it (pid {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}) is "
            "gone (killed or crashed); marked failed",
        )
        failed.append(run.run_id)
    return failed
