"""`recsys run`: materialize the whole graph on the configured database and print a summary."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from recsys_assets.settings import Settings


@dataclass
class RunSummary:
    success: bool
    lines: list[str]
    metadata: dict[str, dict[str, object]]


def _metadata(result, asset: str) -> dict[str, object]:
    events = result.asset_materializations_for_node(asset)
    if not events:
        return {}
    return {k: v.value for k, v in events[-1].metadata.items()}


_EMBEDDED_HEADER = "# Embedded Dagster instance of recsys_assets"
_EMBEDDED_DAGSTER_YAML = f"""\
{_EMBEDDED_HEADER}: SQLite storage in this directory.
# For PostgreSQL storage point DAGSTER_HOME at a directory with a PostgreSQL dagster.yaml.
telemetry:
  enabled: false
# One training run at a time, as in deploy/dagster.yaml: the run queue tags every training
# run (training_job, Materialize all) recsys/job=training and starts one while none is in
# progress; `recsys run` waits for or refuses a training in progress (run_lock.py).
run_coordinator:
  module: recsys_assets.run_queue
  class: TrainingRunQueue
concurrency:
  runs:
    tag_concurrency_limits:
      - key: recsys/job
        value: training
        limit: 1
# With `recsys ui` (its daemon): runs stuck starting or canceling, or running for more than
# 3 hours, are marked failed instead of blocking the one-training-at-a-time limit forever.
# A killed run worker is failed at once by the code server that launched it; runs of
# `recsys run` are checked by process (recsys_assets/run_liveness.py).
run_monitoring:
  enabled: true
  start_timeout_seconds: 300
  cancel_timeout_seconds: 300
  max_runtime_seconds: 10800
  poll_interval_seconds: 60
# context.log.debug lines (e.g. the IO manager's "Loading file from ...") are not stored: each
# is an event log row (60 of an ml-100k run's 325), and Dagster's own events are kept at any
# level.
python_logs:
  python_log_level: INFO
"""


def prepare_dagster_home(settings: Settings | None = None) -> str:
    """Create the instance directory (and a minimal dagster.yaml) and export DAGSTER_HOME.

    `recsys run` and `recsys ui` use the same directory, so runs started here show in the UI.
    """
    home = (settings or Settings.from_env()).dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    # Ours to write when missing, and to update when an older version of this project wrote
    # it (its first line); a file anyone else wrote is left as it is.
    if not config.exists() or (
        config.read_text().startswith(_EMBEDDED_HEADER)
        and config.read_text() != _EMBEDDED_DAGSTER_YAML
    ):
        config.write_text(_EMBEDDED_DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return str(home)


def _embedded_database_is_new(database_file: Path, model_store: str) -> bool:
    """The embedded database counts as new when its file did not exist, or nothing was ever
    trained into this model store (no version saved): demo data cannot replace a real model
    there."""
    from recsys_assets.ml.artifacts import ArtifactStore

    if not database_file.exists():
        return True
    versions, broken = ArtifactStore(model_store).scan()
    return not versions and not broken


def _ensure_ratings(settings: Settings, create_demo: bool) -> str | None:
    """Check there are ratings to train on; demo ratings only into a new embedded database.

    Demo data is never written into a database named by RECSYS_DATABASE_URL, and a database
    file or table that does not exist there is an error naming it, never created.
    Returns a note to print.
    """
    from recsys_assets.data.demo import generate_demo_ratings
    from recsys_assets.usage import UsageError, open_db

    configured = settings.database_url_configured
    database_file = Path(settings.default_database_url.removeprefix("sqlite:///"))
    new = not configured and _embedded_database_is_new(database_file, settings.model_store_root)
    db = open_db(create=not configured)
    if db.count_ratings() > 0:
        return None
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
    return f"created demo data: {len(ratings)} ratings, {len(movies)} movies in {db.safe_url()}"


def run_pipeline(
    n_epochs: int = 20,
    n_folds: int = 4,
    top_n: int = 50,
    create_demo: bool = True,
    log_level: str = "INFO",
    tuning: str = "search",
    engine: str = "compiled",
    max_drop_fraction: float | None = None,
    rmse_tolerance: float | None = None,
    wait: bool = False,
    verbose: bool = False,
    rating_scale: tuple[float, float] | None = None,
) -> RunSummary:
    """Materialize the whole graph (assets and checks) against the embedded (or set) instance.

    One training at a time: behind other `recsys run`s of this RECSYS_HOME (a lock file),
    and behind any training run in progress in the Dagster instance (UI, schedule, sensors);
    it refuses naming that run, or waits with `wait`. Runs of earlier `recsys run`s whose
    process died are marked failed first.
    """
    from recsys_assets.run_lock import TrainingLockBusy, training_lock, wait_for_training_slot
    from recsys_assets.usage import UsageError

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
        note = _ensure_ratings(settings, create_demo)
        run_config = cli_run_config(
            n_epochs=n_epochs,
            n_folds=n_folds,
            top_n=top_n,
            tuning=tuning,
            engine=engine,
            max_drop_fraction=max_drop_fraction,
            rmse_tolerance=rmse_tolerance,
            log_level=log_level,
            verbose=verbose,
            rating_scale=rating_scale,
        )
        # In process unless RECSYS_EXECUTOR says otherwise (launched runs default to
        # multiprocess): the quickest path for one run on one machine. The run carries
        # training_job's tag (recsys/job=training), so the run queue holds the daemon's
        # training runs until it ends; its steps check the instance again (run_lock.py).
        executor = settings.executor or "in_process"
        result = execute_training(instance, run_config, executor, tags=process_tags())
        return _summarize(result, note, start)


def cli_run_config(
    n_epochs: int = 20,
    n_folds: int = 4,
    top_n: int = 50,
    tuning: str = "search",
    engine: str = "compiled",
    max_drop_fraction: float | None = None,
    rmse_tolerance: float | None = None,
    log_level: str = "INFO",
    verbose: bool = False,
    rating_scale: tuple[float, float] | None = None,
) -> dict:
    """training_job's run config for `recsys run`, with the check overrides it was given."""
    from recsys_assets.assets.config import training_run_config

    run_config = training_run_config(
        n_epochs=n_epochs, n_folds=n_folds, top_n=top_n, tuning=tuning, engine=engine
    )
    # Without --verbose, Dagster's log without stack traces: the cause is the last line.
    logger = "console" if verbose else "brief_console"
    run_config["loggers"] = {logger: {"config": {"log_level": log_level}}}
    checks = {
        "ratings_df_checks": {"max_drop_fraction": max_drop_fraction},
        "model_artifact_gates": {"rmse_tolerance": rmse_tolerance},
    }
    if rating_scale is not None:
        checks["ratings_df"] = dict(zip(("rating_min", "rating_max"), rating_scale, strict=True))
    for op, op_config in checks.items():
        values = {k: v for k, v in op_config.items() if v is not None}
        if values:
            run_config["ops"][op] = {"config": values}
    return run_config


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def execute_training(instance, run_config: dict, executor: str, tags: dict | None = None):
    """`training_job` on `instance`, failures reported in the result rather than raised.

    ``in_process`` is the quickest path on one machine: no per-step processes, the CV folds
    forked from one step. Anything else goes through `dg.execute_job` on the reconstructable
    job: multiprocess / celery steps run in other processes, which rebuild the job from its
    module (the executor itself comes from RECSYS_EXECUTOR, see definitions.py).
    """
    import dagster as dg

    from recsys_assets import definitions

    if executor == "in_process":
        job = definitions.build_defs(executor="in_process").resolve_job_def("training_job")
        return job.execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False, tags=tags
        )
    return dg.execute_job(
        dg.reconstructable(definitions.build_training_job),
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
        tags=tags,
    )


def failure_cause(error) -> str:
    """The underlying exception of a step failure (Dagster's SerializableErrorInfo), in one
    line: Dagster wraps user code errors ("Error occurred while executing op ..."), and the
    innermost cause is what a person can act on."""
    while error is not None and getattr(error, "cause", None) is not None:
        error = error.cause
    if error is None:
        return "unknown error"
    message = " ".join((error.message or "").split())
    # SerializableErrorInfo.message is "module.path.ClassName: text": keep "ClassName: text",
    # and only the text for dagster's Failure, whose text is written for people.
    head, sep, text = message.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == error.cls_name:
        message = text if error.cls_name == "Failure" else f"{error.cls_name}: {text}"
    return message or error.cls_name or "unknown error"


def _summarize(result, note: str | None, start: float) -> RunSummary:
    wall = time.perf_counter() - start
    meta = {
        a: _metadata(result, a)
        for a in (
            "ratings_df",
            "svd_hyperparameters",
            "cv_report",
            "model_artifact",
            "champion_model",
            "fallback_predictions",
            "user_predictions",
        )
    }
    lines = [note] if note else []
    search = _search_line(meta["svd_hyperparameters"])
    if not result.success:
        lines += _failure_lines(result, meta, search, wall)
        return RunSummary(False, lines, meta)
    # What cv_report and model_artifact returned (a CVResult, the candidate's manifest); the
    # ratings read and the predictions written are recorded only as metadata.
    cv, art = _returned("cv_report", "model_artifact")
    r, pred = meta["ratings_df"], meta["user_predictions"]
    lines += [
        _ratings_line(r),
        *([search] if search else []),
        *_cv_lines(cv),
        f"model        {art['version']} -> {art['path']} (promoted: passed the gates)",
        f"predictions  {pred['users']} users, {pred['rows']} rows in table {pred['table']} "
        f"(model {pred['model_version']}, the champion's; {pred['users_popular']} cold-start "
        "users get most-popular)",
        f"wall time    {wall:.1f}s (run {result.run_id})",
    ]
    return RunSummary(True, lines, meta)


def _returned(*assets: str) -> list:
    """The values ``assets`` returned in the run that just succeeded, read back from where the
    IO manager stored them (`<base>/<asset>.pkl`), whichever executor ran the steps."""
    from upath import UPath

    from recsys_assets.resources.io_manager import PickleUPathIOManager

    base = UPath(Settings.from_env().io_manager_base)
    io = PickleUPathIOManager(base_path=base)
    return [io.load_from_path(None, base / f"{asset}{io.extension}") for asset in assets]


def _failure_lines(result, meta: dict, search: str | None, wall: float) -> list[str]:
    """Failed gates and data checks first: they say why the model was not promoted."""
    lines = []
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                lines.append(
                    f"CHECK FAILED {evaluation.asset_key.to_user_string()}:"
                    f"{evaluation.check_name}: {evaluation.description or ''}"
                )
    if search:
        lines.append(search)
    lines += _outcome_lines(meta)
    causes = [
        f"step {event.step_key} failed: {failure_cause(event.step_failure_data.error)}"
        for event in result.all_events
        if event.is_step_failure
    ]
    failed_checks = [line.removeprefix("CHECK FAILED ") for line in lines if "CHECK" in line]
    lines.append(f"run {result.run_id} failed after {wall:.1f}s")
    # The last line names the cause: the failed step's own exception, else the gate.
    cause = (failed_checks or causes or ["the run failed (see the Dagster UI)"])[0]
    lines.append(f"error: {cause}")
    return lines


def _ratings_line(r: dict[str, object]) -> str:
    dropped = ", ".join(
        f"{k.removeprefix('dropped_').replace('_', ' ')} {v}"
        for k, v in r.items()
        if k.startswith("dropped_")
    )
    flagged = ", ".join(
        f"{k.removeprefix('flagged_').replace('_', ' ')} {v}"
        for k, v in r.items()
        if k.startswith("flagged_") and v
    )
    if flagged:
        dropped += f"; flagged, kept: {flagged}"
    return (
        f"ratings      read {r['rows_read']}, kept {r['rows_kept']}, dropped {r['rows_dropped']}"
        f" ({dropped}); {r['users']} users, {r['movies']} movies"
    )


def _cv_lines(cv) -> list[str]:
    """The CV's figures (fold means; std over folds as cv_report's metadata) and which list
    ships."""
    mean = cv.folds.mean(numeric_only=True)
    std = cv.folds.std(ddof=0, numeric_only=True)
    shipped = (
        f"EASE ranking model, λ={cv.ease.lam:g}" if cv.policy.ranker == "ease" else "SVD blend"
    )
    return [
        f"cv {cv.n_folds}-fold    RMSE {mean['rmse']:.4f} ± {std['rmse']:.4f}   "
        f"MAE {mean['mae']:.4f} ± {std['mae']:.4f}   "
        f"(BaselineOnly RMSE {mean['baseline_rmse']:.4f})",
        f"ranking      NDCG@10 {mean['shipped_ndcg']:.4f} shipped ({shipped}; EASE "
        f"{mean.get('ease_ndcg', float('nan')):.4f}, blend {mean['blend_ndcg']:.4f}, "
        f"SVD-only {mean['svd_ndcg']:.4f}, most-popular {mean['popular_ndcg']:.4f})",
    ]


def _outcome_lines(meta: dict[str, dict[str, object]]) -> list[str]:
    """What a failed run changed, from what its steps recorded: whether the candidate was
    promoted (`champion_model` materializes only after latest.json and the history both
    name it), and whose suggestions `user_predictions` holds now."""
    art, champ = meta["model_artifact"], meta["champion_model"]
    fallback, pred = meta["fallback_predictions"], meta["user_predictions"]
    lines = []
    if champ:
        champion = str(champ["version"])
        lines.append(
            f"model        {champion} promoted: passed the gates; latest.json and the history "
            "name it and serving uses it"
        )
    else:
        # fallback_predictions reads the champion; when it did not run, latest.json and
        # user_predictions were not touched by this run either.
        champion = str(fallback["champion"]) if fallback else None
        if art:
            stays = {
                None: "latest.json and user_predictions are unchanged",
                "none": "there is no champion yet: no model was promoted",
            }.get(champion, f"latest stays with the champion {champion}")
            lines.append(f"model        {art['version']} saved but NOT promoted; {stays}")
    if pred:
        held = str(pred["model_version"])
    elif fallback.get("published"):
        held = str(fallback["model_version"])
    else:
        held = str(fallback.get("model_version", "unknown")) if fallback else "unknown"
    if held == "most-popular" and fallback.get("published") and not pred:
        lines.append(
            f"predictions  most-popular suggestions for all {fallback['users']} users "
            f"({fallback['rows']} rows, source='popular') until a model passes the gates"
        )
    elif champion in (None, "none"):
        pass
    elif held == champion:
        how = "republished" if (pred or fallback.get("published")) else "unchanged"
        lines.append(f"predictions  user_predictions holds the champion's suggestions ({how})")
    elif held == "unknown":
        lines.append(
            f"predictions  NOT known to be the champion's ({champion}): user_predictions was "
            "not written; the next `recsys run` republishes them (gates or not)"
        )
    else:
        lines.append(
            f"predictions  NOT the champion's: user_predictions holds model {held}'s, the "
            f"champion is {champion}; the next `recsys run` republishes them (gates or not)"
        )
    return lines


def _search_line(meta: dict[str, object]) -> str | None:
    """The hyperparameter line of the summary (None when the search step did not run)."""
    if not meta:
        return None
    chosen = " ".join(
        f"{k}={meta[k]:g}" for k in ("n_factors", "n_epochs", "lr_all", "reg_all") if k in meta
    )
    if meta.get("tuning") != "search":
        return f"tuning       fixed: {chosen}"
    return (
        f"tuning       chose {chosen} ({meta['chosen']}): validation RMSE "
        f"{meta['validation_rmse']:.4f}, seed's {meta['seed_validation_rmse']:.4f}; "
        f"{meta['configurations']} configurations, {meta['fits']} fits in "
        f"{meta['search_seconds']:.1f}s"
    )


def ui_command(args: argparse.Namespace) -> int:
    """`dagster dev` on this project's workspace.yaml and instance (replaces this process)."""
    home = prepare_dagster_home()
    workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster), "dev", "-w", str(workspace), "--host", args.host, "--port", str(args.port)]
    print(f"DAGSTER_HOME={home}\n{' '.join(cmd)}", flush=True)
    os.execv(cmd[0], cmd)
    return 0  # not reached


def run_command(args: argparse.Namespace) -> int:
    summary = run_pipeline(
        n_epochs=args.n_epochs,
        n_folds=args.folds,
        top_n=args.top_n,
        create_demo=not args.no_demo_data,
        tuning=args.tuning,
        engine=args.engine,
        max_drop_fraction=args.max_drop_fraction,
        rmse_tolerance=args.rmse_tolerance,
        wait=args.wait,
        verbose=args.verbose,
        rating_scale=args.rating_scale,
    )
    print("\n".join(summary.lines), file=sys.stdout if summary.success else sys.stderr)
    return 0 if summary.success else 1
