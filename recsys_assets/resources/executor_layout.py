"""Which executor runs the training job's steps, as a resource the fan-out steps read.

`cv_fold_plan` and the hyperparameter search can split their work into steps. Under Celery
one fold (or candidate) per step lets the executor spread them over machines. On one machine
(in process, or the multiprocess executor) one step takes them all and forks a worker per
core instead: the same parallelism without Dagster's cost per step (a process, its inputs
unpickled, a dozen event-log rows), which dominated small data, and with the step's dataset
shared by its forked workers rather than loaded once per step.

`definitions.py` sets this resource from the same setting that picks the executor
(RECSYS_EXECUTOR, or `in_process` for `recsys run` and `dg.materialize`), so the steps never
inspect Dagster's executor objects.
"""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

ExecutorName = Literal["multiprocess", "in_process", "celery"]


class ExecutorLayout(dg.ConfigurableResource):
    """The executor the run's steps go to (set by the definitions, not by users)."""

    executor: ExecutorName = Field(
        description="The job's executor: multiprocess, in_process or celery (RECSYS_EXECUTOR)."
    )

    def spreads_steps(self) -> bool:
        """True when steps may run on other machines (Celery): fan out one task per step."""
        return self.executor == "celery"
