"""The instance's run queue for this project: Dagster's QueuedRunCoordinator, with every
training run tagged when it is submitted.

`training_job` runs carry `recsys/job=training` already; the UI's *Materialize all* (and any
asset selection) launches Dagster's implicit asset job, whose runs carry no tag of ours. Tagged
at submission, they wait in the queue behind a training in progress like any other (the UI's
*Queued* tab shows them and the limit), instead of starting beside it. Named in
deploy/dagster.yaml and the embedded instance's dagster.yaml (`run_coordinator`).
"""

from __future__ import annotations

import dagster as dg

from recsys_assets.run_lock import JOB_TAG, TRAINING, TRAINING_TAGS, is_training_run


class TrainingRunQueue(dg.QueuedRunCoordinator):
    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        if is_training_run(run) and run.tags.get(JOB_TAG) != TRAINING:
            self._instance.add_run_tags(run.run_id, TRAINING_TAGS)
        return super().submit_run(context)
