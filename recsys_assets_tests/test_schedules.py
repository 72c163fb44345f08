"""The nightly schedule: cron, timezone from configuration, run config for the whole graph."""

import datetime as dt

import dagster as dg
import pytest

from recsys_assets.assets.config import TuningConfig, training_run_config
from recsys_assets.definitions import build_defs, defs
from recsys_assets.schedules import build_daily_training_schedule


def test_daily_training_is_running_by_default_at_two_utc(monkeypatch):
    monkeypatch.delenv("RECSYS_TIMEZONE", raising=False)
    schedule = build_defs().resolve_schedule_def("daily_training")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "training_job"


def test_daily_training_requests_the_whole_graph_with_20_epochs():
    schedule = defs.resolve_schedule_def("daily_training")
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 28, 2, 0, tzinfo=dt.UTC)
    )
    requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1
    config = requests[0].run_config
    assert config == training_run_config()  # the job's own defaults
    # Those defaults: a search seeded with the seed's 20 epochs, as the Celery Beat entry ran;
    # CV and the final fit take its choice.
    assert (TuningConfig().n_epochs, TuningConfig().tuning) == (20, "search")
    dg.validate_run_config(defs.resolve_job_def("training_job"), config)


def test_timezone_comes_from_recsys_timezone(monkeypatch):
    monkeypatch.setenv("RECSYS_TIMEZONE", "Europe/Berlin")
    assert build_daily_training_schedule().execution_timezone == "Europe/Berlin"


def test_unknown_timezone_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RECSYS_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValueError, match="RECSYS_TIMEZONE='Mars/Olympus' is not a known"):
        build_daily_training_schedule()
