"""One training at a time through the Dagster instance: a real training run in progress (a
job that holds its step until released, executed on the instance `recsys run` uses) against
`recsys run` and against a second run executed outside the run queue."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import dagster as dg
import pytest

from recsys_assets.cli import instance as embedded
from recsys_assets.cli import main
from recsys_assets.cli import run as cli_run
from recsys_assets.cli.summary import failure_cause
from recsys_assets.resources.ratings_db import RatingsDatabase
from recsys_assets.run_lock import JOB_TAG, TRAINING, is_training_run


class Holder:
    """A run of `job_name` whose step holds until `release` is set, in a thread."""

    def __init__(self, job_name: str) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.result: dg.ExecuteInProcessResult | None = None
        self.run_id = ""

        @dg.op
        def hold(context) -> None:
            self.run_id = context.run_id
            self.started.set()
            assert self.release.wait(120)

        @dg.job(name=job_name)
        def job() -> None:
            hold()

        self.job = job
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with dg.DagsterInstance.get() as instance:
            self.result = self.job.execute_in_process(instance=instance)


@pytest.fixture
def instance_home(recsys_home) -> Iterator[None]:
    embedded.prepare_dagster_home()  # DAGSTER_HOME under RECSYS_HOME, as `recsys run` does
    yield


def _hold(job_name: str) -> Holder:
    holder = Holder(job_name)
    holder.thread.start()
    assert holder.started.wait(120)
    return holder


def test_recsys_run_refuses_or_waits_for_a_training_in_the_instance(
    instance_home, capsys, monkeypatch
):
    # "Materialize all" in the UI runs Dagster's implicit asset job, untagged at first.
    holder = _hold("__ASSET_JOB")
    try:
        assert main(["run", "--no-demo-data"]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"training run {holder.run_id} (job __ASSET_JOB, STARTED)" in line
        assert "--wait" in line

        # --wait: starts once the training ends (and then fails for its own reason: no data).
        def release_when_waiting(message: str) -> None:
            assert holder.run_id in message
            holder.release.set()

        monkeypatch.setattr(cli_run, "_note", release_when_waiting)
        assert main(["run", "--wait", "--no-demo-data"]) == 2
        assert holder.release.is_set()
        assert "no active movie ratings" in capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        holder.release.set()
        holder.thread.join()
    assert holder.result.success


def test_a_training_started_outside_the_queue_stops_at_its_first_database_step(
    instance_home, recsys_home
):
    holder = _hold("training_job")
    try:

        @dg.op(required_resource_keys={"ratings_db"})
        def read(context) -> None:
            raise AssertionError("must not run beside another training")

        @dg.job(
            name="training_job",
            resource_defs={"ratings_db": RatingsDatabase(url=f"sqlite:///{recsys_home}/x.db")},
        )
        def second() -> None:
            read()

        with dg.DagsterInstance.get() as instance:
            result = second.execute_in_process(instance=instance, raise_on_error=False)
            (failure,) = [e for e in result.all_events if e.is_resource_init_failure]
            cause = failure_cause(failure.event_specific_data.error)
            assert f"training run {holder.run_id} (job training_job, STARTED)" in cause
            assert "already in progress" in cause
            # Tagged, so the run queue counted it while it was in progress.
            assert instance.get_run_by_id(result.run_id).tags[JOB_TAG] == TRAINING
    finally:
        holder.release.set()
        holder.thread.join()
    assert holder.result.success


@pytest.mark.parametrize(
    "job_name, tags, training",
    [
        ("training_job", {}, True),
        ("__ASSET_JOB", {}, True),
        ("anything", {JOB_TAG: TRAINING}, True),
        ("refresh_predictions_job", {JOB_TAG: "refresh"}, False),
    ],
)
def test_which_runs_are_trainings(job_name, tags, training):
    assert is_training_run(dg.DagsterRun(job_name=job_name, tags=tags)) is training
