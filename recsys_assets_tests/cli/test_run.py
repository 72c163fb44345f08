"""`recsys run` end to end from a clean RECSYS_HOME, as a newcomer's `make run` does."""

import json
import os

import dagster as dg
import pytest

from recsys_assets.cli import main
from recsys_assets.db import RatingsStore


@pytest.fixture
def training_results(monkeypatch):
    """The results of the runs `recsys run` executes in this test, in order."""
    from recsys_assets.cli import run as cli_run

    results = []

    def spy(*args, **kwargs):
        results.append(cli_run.execute_training.__wrapped__(*args, **kwargs))
        return results[-1]

    spy.__wrapped__ = cli_run.execute_training
    monkeypatch.setattr(cli_run, "execute_training", spy)
    return results


def test_run_from_a_clean_home(recsys_home, capsys, training_results):
    results = training_results
    assert main(["run", "--top-n", "5"]) == 0
    out = capsys.readouterr().out
    assert "created demo data: 100000 ratings" in out
    assert "ratings      read 100000, kept 100000, dropped 0" in out
    assert "cv 4-fold    RMSE" in out and "MAE" in out
    # Under the evaluation budget (1M ratings): the search and the CV ran on every rating.
    assert "evaluated    on every rating (100,000 ratings of 1,000 users)" in out
    assert "predictions  " in out and "rows in table user_predictions" in out
    latest = json.loads((recsys_home / "models" / "surprise" / "latest.json").read_text())
    assert f"model        {latest['version']} -> " in out
    assert (recsys_home / "dagster_home").is_dir()
    table = RatingsStore.from_env().read_predictions()
    assert len(table) == 5 * table["user_id"].nunique()

    assert "ranking      NDCG@10" in out and "(promoted: passed the gates)" in out
    assert "tuning       chose n_factors=" in out and "seed's" in out

    # In process: every step ran here, the CV folds in one step (forked from it), and the
    # run carries this process's tags; yet the result keeps no step's output value in memory
    # (`execute_in_process` would hold them all until the run ends).
    (result,) = results
    steps = [e for e in result.all_events if e.event_type_value == "STEP_START"]
    assert steps and {e.pid for e in steps} == {os.getpid()}
    assert len([e for e in steps if e.step_key.startswith("cv_report.cv_fold[")]) == 1
    run = dg.DagsterInstance.get().get_run_by_id(result.run_id)
    assert run.tags["recsys/pid"] == str(os.getpid()) and run.tags["recsys/job"] == "training"
    with pytest.raises(dg.DagsterInvariantViolationError, match="context manager"):
        result.output_for_node("cv_report")

    # A second run reuses the data and trains a new version; one epoch is worse than
    # BaselineOnly, so it is saved but not promoted, and says so.
    assert main(["run", "--tuning", "fixed", "--n-epochs", "1", "--top-n", "5"]) == 1
    captured = capsys.readouterr()
    assert "created demo data" not in captured.out + captured.err
    assert "CHECK FAILED model_artifact:beats_baseline: CV RMSE" in captured.err
    assert "NOT promoted" in captured.err
    second = json.loads((recsys_home / "models" / "surprise" / "latest.json").read_text())
    assert second["version"] == latest["version"]
    versions = list((recsys_home / "models" / "surprise").glob("2*.json"))
    assert len(versions) == 2
    after = RatingsStore.from_env().read_predictions()
    assert set(after["model_version"]) == {latest["version"]}


def test_run_picks_the_multiprocess_executor_for_large_data(
    recsys_home, capsys, monkeypatch, training_results
):
    """From `MULTIPROCESS_FROM_RATINGS` on (lowered here to the demo data's size), `recsys run`
    runs each step in its own process; the CV folds and each search rung still share one step
    that forks its workers. RECSYS_EXECUTOR, when set, wins."""
    from recsys_assets.cli import run as cli_run

    assert cli_run.fastest_executor(9_999_999) == "in_process"
    assert cli_run.fastest_executor(10_000_000) == "multiprocess"
    monkeypatch.setattr(cli_run, "MULTIPROCESS_FROM_RATINGS", 100_000)
    results = training_results
    assert main(["run", "--tuning", "fixed", "--top-n", "5"]) == 0
    (result,) = results
    steps = [e for e in result.all_events if e.event_type_value == "STEP_START"]
    assert os.getpid() not in {e.pid for e in steps} and len({e.pid for e in steps}) > 1
    assert len([e for e in steps if e.step_key.startswith("cv_report.cv_fold[")]) == 1

    monkeypatch.setenv("RECSYS_EXECUTOR", "in_process")
    assert main(["run", "--tuning", "fixed", "--top-n", "5"]) == 0
    steps = [e for e in results[-1].all_events if e.event_type_value == "STEP_START"]
    assert {e.pid for e in steps} == {os.getpid()}


def test_run_without_data_and_without_demo_fails_clearly(recsys_home, capsys):
    assert main(["run", "--no-demo-data"]) != 0
    err = capsys.readouterr().err
    assert "no active movie ratings" in err


def test_demo_data_shape(recsys_home, capsys, monkeypatch):
    from recsys_assets import cli

    monkeypatch.setitem(cli.DEMO_SHAPES, "tiny", (40, 60, 1500))
    assert main(["demo-data", "--shape", "tiny"]) == 0
    assert "1500 demo ratings (40 users" in capsys.readouterr().out
    assert RatingsStore.from_env().count_ratings() == 1500
    assert cli.DEMO_SHAPES["25m"] == (162_541, 59_047, 25_000_000)


def test_first_run_failing_the_gates_says_so_and_serves_most_popular(recsys_home, capsys):
    # One epoch at fixed hyperparameters loses to BaselineOnly: no model can be promoted.
    assert main(["run", "--tuning", "fixed", "--n-epochs", "1", "--top-n", "5"]) == 1
    err = capsys.readouterr().err
    assert "CHECK FAILED model_artifact:beats_baseline" in err
    assert "there is no champion yet: no model was promoted" in err
    assert "most-popular suggestions for all 1000 users (5000 rows" in err
    assert not (recsys_home / "models" / "surprise" / "latest.json").exists()
    table = RatingsStore.from_env().read_predictions()
    assert table["user_id"].nunique() == 1000 and set(table["source"]) == {"popular"}


def test_run_overrides_reach_the_checks_as_valid_run_config():
    import dagster as dg

    from recsys_assets.cli import build_parser
    from recsys_assets.cli.run import RunOptions, cli_run_config
    from recsys_assets.definitions import build_training_job

    args = build_parser().parse_args(
        ["run", "--max-drop-fraction", "0.8", "--rmse-tolerance", "0.05", "--wait"]
    )
    assert (args.max_drop_fraction, args.rmse_tolerance, args.wait) == (0.8, 0.05, True)
    config = cli_run_config(RunOptions.from_args(args))
    ops = dg.validate_run_config(build_training_job(), config)["ops"]
    assert ops["ratings_df_checks"]["config"]["max_drop_fraction"] == 0.8
    assert ops["model_artifact_gates"]["config"]["rmse_tolerance"] == 0.05
    assert "brief_console" in config["loggers"]
    assert "console" in cli_run_config(RunOptions(verbose=True))["loggers"]
    dg.validate_run_config(build_training_job(), cli_run_config(RunOptions(verbose=True)))
    assert build_parser().parse_args(["run"]).max_drop_fraction is None  # check's default


def test_eval_max_ratings_flag_reaches_evaluation_sample_as_valid_run_config(capsys):
    import dagster as dg

    from recsys_assets.cli import build_parser, main
    from recsys_assets.cli.run import RunOptions, cli_run_config
    from recsys_assets.definitions import build_training_job

    args = build_parser().parse_args(["run", "--eval-max-ratings", "5000"])
    config = cli_run_config(RunOptions.from_args(args))
    ops = dg.validate_run_config(build_training_job(), config)["ops"]
    assert ops["evaluation_sample"]["config"]["max_ratings"] == 5000
    # Unset: the job's default budget (1M ratings), as the schedule and the launchpad run it.
    unset = cli_run_config(RunOptions.from_args(build_parser().parse_args(["run"])))
    assert "evaluation_sample" not in unset["ops"]
    defaults = dg.validate_run_config(build_training_job(), unset)["ops"]
    assert defaults["evaluation_sample"]["config"]["max_ratings"] == 1_000_000
    assert main(["run", "--eval-max-ratings", "-1"]) == 2
    assert "must be >= 0" in capsys.readouterr().err


def test_rating_scale_flag_reaches_ratings_df_as_valid_run_config(capsys):
    import dagster as dg

    from recsys_assets.cli import build_parser, main
    from recsys_assets.cli.run import RunOptions, cli_run_config
    from recsys_assets.definitions import build_training_job

    args = build_parser().parse_args(["run", "--rating-scale", "1,10"])
    assert args.rating_scale == (1.0, 10.0)
    config = cli_run_config(RunOptions.from_args(args))
    ops = dg.validate_run_config(build_training_job(), config)["ops"]
    assert ops["ratings_df"]["config"]["rating_min"] == 1.0
    assert ops["ratings_df"]["config"]["rating_max"] == 10.0
    assert "ratings_df" not in cli_run_config()["ops"]  # unset: RECSYS_RATING_SCALE's
    assert main(["run", "--rating-scale", "10,1"]) == 2
    assert "--rating-scale: must be MIN,MAX with finite MIN < MAX" in capsys.readouterr().err


def test_recsys_run_the_schedule_and_the_launchpad_train_with_the_same_config():
    import dagster as dg

    from recsys_assets.cli import build_parser
    from recsys_assets.cli.run import RunOptions, cli_run_config
    from recsys_assets.definitions import build_training_job
    from recsys_assets.jobs import TRAINING_TAGS
    from recsys_assets.schedules import build_daily_training_schedule

    args = build_parser().parse_args(["run"])
    cli = cli_run_config(RunOptions.from_args(args))
    job = build_training_job()
    # The launchpad's defaults: the job's config schema with nothing filled in.
    launchpad = dg.validate_run_config(job, {})["ops"]
    schedule = build_daily_training_schedule("UTC")
    (request,) = schedule.evaluate_tick(dg.build_schedule_context()).run_requests
    scheduled = dg.validate_run_config(job, request.run_config)["ops"]
    assert dg.validate_run_config(job, cli)["ops"] == launchpad == scheduled
    # Every path's run carries the tag the run queue limits (the CLI adds its process).
    assert job.tags.items() >= TRAINING_TAGS.items()
