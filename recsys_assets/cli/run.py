"""`recsys run`: a thin client of `training_job` — the job's own run config defaults and tags,
executed on the embedded (or configured) instance, one training at a time, with a summary.

What it does that launched runs do not: demo ratings into a new embedded database, the lock
file against a second `recsys run` of the same RECSYS_HOME, an executor picked for the size of
the data unless RECSYS_EXECUTOR names one (`fastest_executor`), and the printed summary.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from recsys_assets.cli.instance import prepare_dagster_home
from recsys_assets.cli.summary import RunSummary, summarize
from recsys_assets.settings import Settings

if TYPE_CHECKING:  # dagster is imported only when a command needs it (`recsys --help` is quick)
    from recsys_assets.resources.executor_layout import ExecutorName


@dataclass(frozen=True)
class RunOptions:
    """`recsys run`'s flags. None keeps the job's own default (the Config classes), so a run
    from here is configured exactly like one from the UI or the schedule."""

    n_epochs: int | None = None
    n_folds: int | None = None
    top_n: int | None = None
    tuning: str | None = None
    eval_max_ratings: int | None = None
    engine: str | None = None
    rating_scale: tuple[float, float] | None = None
    max_drop_fraction: float | None = None
    rmse_tolerance: float | None = None
    create_demo: bool = True
    wait: bool = False
    verbose: bool = False
    log_level: str = "INFO"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls(**given, n_folds=args.folds, create_demo=not args.no_demo_data)


def _embedded_database_is_new(database_file: Path, model_store: str) -> bool:
    """The embedded database counts as new when its file did not exist, or nothing was ever
    trained into this model store (no version saved): demo data cannot replace a real model
    there."""
    from recsys_assets.ml.artifacts import ArtifactStore

    if not database_file.exists():
        return True
    versions, broken = ArtifactStore(model_store).scan()
    return not versions and not broken


def _ensure_ratings(settings: Settings, create_demo: bool) -> tuple[str | None, int]:
    """Check there are ratings to train on; demo ratings only into a new embedded database.

    Demo data is never written into a database named by RECSYS_DATABASE_URL, and a database
    file or table that does not exist there is an error naming it, never created.
    Returns a note to print and the number of active ratings.
    """
    from recsys_assets.data.demo import generate_demo_ratings
    from recsys_assets.usage import UsageError, open_db

    configured = settings.database_url_configured
    database_file = Path(settings.default_database_url.removeprefix("sqlite:///"))
    new = not configured and _embedded_database_is_new(database_file, settings.model_store_root)
    db = open_db(create=not configured)
    count = db.count_ratings()
    if count > 0:
        return None, count
    schema = db.preset.layout
    if schema is not None:
        # The app's database: the project writes only user_predictions there, never demo data.
        raise UsageError(
            f"{db.safe_url()} has no active ratings of content type {schema.content_type!r} "
            f"in {schema.ratings_table}; rate something in the app first"
        )
    where = f"{db.safe_url()} (schema preset {db.preset.name})"
    load = "import ratings with `recsys import-movielens PATH`"
    if configured:
        raise UsageError(
            f"{where} has no active movie ratings; {load}. Demo data is never generated into "
            "a database named by RECSYS_DATABASE_URL (unset it to use the embedded database)"
        )
    if not create_demo or not new:
        why = "" if not create_demo else " and models were already trained in this RECSYS_HOME"
        raise UsageError(
            f"{where} has no active movie ratings{why}; {load}, or generate synthetic "
            "ratings explicitly with `recsys demo-data`"
        )
    movies, ratings = generate_demo_ratings()
    db.insert_movies(movies)
    db.insert_ratings(ratings)
    note = f"created demo data: {len(ratings)} ratings, {len(movies)} movies in {db.safe_url()}"
    return note, len(ratings)


# From this many ratings `recsys run` uses the multiprocess executor, below it in process
# (docs/benchmarks.md, "which executor"). The evaluation is capped (`evaluation_sample`), but
# `svd_model`'s single-threaded fit on every rating grows with the data: in its own process
# it overlaps the cross-validation (at 25M, 96 s beside 89 s). At 5M the fit takes 12 s and
# the cost of a process per step (launches, inputs unpickled) outweighs it: 109 s in process
# against 113 s multiprocess.
MULTIPROCESS_FROM_RATINGS = 10_000_000


def fastest_executor(n_ratings: int) -> ExecutorName:
    """The executor `recsys run` uses when RECSYS_EXECUTOR is unset."""
    return "multiprocess" if n_ratings >= MULTIPROCESS_FROM_RATINGS else "in_process"


def run_pipeline(options: RunOptions | None = None) -> RunSummary:
    """Materialize the whole graph (assets and checks) against the embedded (or set) instance.

    One training at a time: behind other `recsys run`s of this RECSYS_HOME (a lock file),
    and behind any training run in progress in the Dagster instance (UI, schedule, sensors);
    it refuses naming that run, or waits with `wait`. Runs of earlier `recsys run`s whose
    process died are marked failed first.
    """
    from recsys_assets.run_lock import TrainingLockBusy, training_lock, wait_for_training_slot
    from recsys_assets.usage import UsageError

    options = options or RunOptions()
    wait = options.wait
    start = time.perf_counter()
    settings = Settings.from_env()
    prepare_dagster_home(settings)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(training_lock(settings.recsys_home, wait=wait, on_wait=_note))
        except TrainingLockBusy as exc:
            raise UsageError(str(exc)) from exc
        import dagster as dg

        from recsys_assets.run_liveness import fail_dead_runs, process_tags

        instance = stack.enter_context(dg.DagsterInstance.get())
        for run_id in fail_dead_runs(instance):
            _note(f"marked run {run_id} failed: its `recsys run` process is gone")
        # Before anything is read or written: demo data must not land under a running training.
        try:
            wait_for_training_slot(instance, wait=wait, on_wait=_note)
        except TrainingLockBusy as exc:
            raise UsageError(str(exc)) from exc
        note, n_ratings = _ensure_ratings(settings, options.create_demo)
        run_config = cli_run_config(options)
        # RECSYS_EXECUTOR if set, else the quickest for this much data on one machine. The
        # run carries training_job's tag (recsys/job=training), so the run queue holds the
        # daemon's training runs until it ends; its steps check the instance again
        # (run_lock.py).
        executor = settings.executor or fastest_executor(n_ratings)
        result = execute_training(instance, run_config, executor, tags=process_tags())
        return summarize(result, note, start)


def cli_run_config(options: RunOptions | None = None) -> dict:
    """training_job's run config for `recsys run`: the job's defaults, and what was given."""
    from recsys_assets.assets.config import training_run_config

    o = options or RunOptions()
    hyper = {"engine": o.engine} if o.engine is not None else {}
    run_config = training_run_config(
        n_epochs=o.n_epochs,
        n_folds=o.n_folds,
        top_n=o.top_n,
        tuning=o.tuning,
        eval_max_ratings=o.eval_max_ratings,
        **hyper,
    )
    # Without --verbose, Dagster's log without stack traces: the cause is the last line.
    logger = "console" if o.verbose else "brief_console"
    run_config["loggers"] = {logger: {"config": {"log_level": o.log_level}}}
    checks = {
        "ratings_df_checks": {"max_drop_fraction": o.max_drop_fraction},
        "model_artifact_gates": {"rmse_tolerance": o.rmse_tolerance},
    }
    if o.rating_scale is not None:
        checks["ratings_df"] = dict(zip(("rating_min", "rating_max"), o.rating_scale, strict=True))
    for op, op_config in checks.items():
        values = {k: v for k, v in op_config.items() if v is not None}
        if values:
            run_config["ops"][op] = {"config": values}
    return run_config


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def execute_training(instance, run_config: dict, executor: str, tags: dict | None = None):
    """`training_job` on `instance` and `executor`, failures reported in the result rather
    than raised.

    Through `dg.execute_job` on the reconstructable job whatever the executor: ``in_process``
    runs every step here (the CV folds forked from one step), multiprocess / celery steps run
    in other processes, which rebuild the job from its module with the same executor. Not
    `execute_in_process`: it keeps every step's output value in memory until the run ends
    (~0.7 GB at 5M ratings); here outputs live only in the IO manager's storage, where the
    summary reads them back.
    """
    import dagster as dg

    from recsys_assets import definitions

    job = dg.build_reconstructable_job(
        definitions.__name__,
        definitions.build_training_job.__name__,
        reconstructable_kwargs={"executor": executor, "build_key": uuid.uuid4().hex},
    )
    return dg.execute_job(
        job, instance=instance, run_config=run_config, raise_on_error=False, tags=tags
    )


def run_command(args: argparse.Namespace) -> int:
    summary = run_pipeline(RunOptions.from_args(args))
    print("\n".join(summary.lines), file=sys.stdout if summary.success else sys.stderr)
    return 0 if summary.success else 1
