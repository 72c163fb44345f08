"""Which executor runs the training job's steps, as a resource the fan-out steps read.

`cv_fold_plan` and the hyperparameter search split their work into steps. Under the
multiprocess or Celery executor one fold (or candidate) per step lets the executor spread them
over cores or machines; when every step runs in one process, that would run them one after
another, so there one step takes them all and forks a worker per fold instead.

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

    def steps_share_one_process(self) -> bool:
        """True when the steps run one after another in a single process."""
        return self.executor == "in_process"
