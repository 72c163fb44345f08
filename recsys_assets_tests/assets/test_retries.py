"""Transient database errors are retried with backoff; everything else fails at once."""

import socket

import dagster as dg
import pytest

from recsys_assets.assets.retries import retry_only_transient_db_errors
from recsys_assets.db import RatingsStore
from recsys_assets.definitions import defs


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections are refused


@pytest.mark.parametrize("name", ["ratings_df", "user_predictions"])
def test_db_assets_back_off_exponentially(name):
    node = defs.resolve_assets_def(name).node_def
    assert node.retry_policy.backoff == dg.Backoff.EXPONENTIAL
    assert node.retry_policy.max_retries == 3


def _run(op_fn):
    @dg.job
    def job():
        op_fn()

    return job.execute_in_process(raise_on_error=False)


def _retries(result) -> int:
    return sum(1 for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY")


POLICY = dg.RetryPolicy(max_retries=2, delay=0.01, backoff=dg.Backoff.EXPONENTIAL)


def test_refused_connection_is_retried_then_fails():
    database = RatingsStore(f"postgresql+psycopg2://u:p@127.0.0.1:{_closed_port()}/db")

    @dg.op(retry_policy=POLICY)
    def read(context: dg.OpExecutionContext):
        with retry_only_transient_db_errors(context):
            database.count_ratings()

    result = _run(read)
    assert not result.success
    assert _retries(result) == 2
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    cause = str(failure.step_failure_data.error.cause)
    assert "OperationalError" in cause and "Connection refused" in cause


def test_sqlite_syntax_style_errors_are_not_retried(tmp_path):
    (tmp_path / "no_tables.db").touch()  # exists (a missing file is its own error), empty
    database = RatingsStore(f"sqlite:///{tmp_path / 'no_tables.db'}")

    @dg.op(retry_policy=POLICY)
    def read(context: dg.OpExecutionContext):
        with retry_only_transient_db_errors(context):
            database.count_ratings()  # "no such table": OperationalError, but not transient,
            # reported as the SchemaError naming the table

    result = _run(read)
    assert not result.success and _retries(result) == 0
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert "table 'ratings' does not exist" in description


def test_bad_input_failure_is_final():
    @dg.op(retry_policy=POLICY)
    def bad(context: dg.OpExecutionContext):
        with retry_only_transient_db_errors(context):
            raise dg.Failure("too few ratings")

    result = _run(bad)
    assert not result.success and _retries(result) == 0


@pytest.fixture
def locked_sqlite(tmp_path, monkeypatch):
    """A SQLite ratings DB whose write lock another connection holds; lock waits of 50 ms
    (the default busy_timeout is 30 s) so "database is locked" comes quickly."""
    import sqlite3

    import pandas as pd

    from recsys_assets import db

    def short_busy_timeout(dbapi_connection, record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=50")
        cursor.close()

    monkeypatch.setattr(db.engines, "_sqlite_pragmas", short_busy_timeout)
    database = RatingsStore(f"sqlite:///{tmp_path / 'locked.db'}")
    database.ensure_schema()
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer (the app) holds the write lock
    predictions = pd.DataFrame({"user_id": [1], "movie_id": [2], "rank": [1], "score": [4.0]})
    yield database, holder, predictions
    holder.close()


def test_sqlite_database_is_locked_is_retried_until_it_clears(locked_sqlite):
    database, holder, predictions = locked_sqlite

    @dg.op(retry_policy=POLICY)
    def write(context: dg.OpExecutionContext):
        if context.retry_number == 1:
            holder.execute("COMMIT")  # the other writer finishes
        with retry_only_transient_db_errors(context):
            database.replace_predictions(predictions, "v1")

    result = _run(write)
    assert result.success and _retries(result) == 1
    assert database.read_predictions()["model_version"].tolist() == ["v1"]


def test_sqlite_database_is_locked_for_good_fails_after_the_retries(locked_sqlite):
    database, _, predictions = locked_sqlite

    @dg.op(retry_policy=POLICY)
    def write(context: dg.OpExecutionContext):
        with retry_only_transient_db_errors(context):
            database.replace_predictions(predictions, "v1")

    result = _run(write)
    assert not result.success and _retries(result) == 2
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "database is locked" in str(failure.step_failure_data.error.cause)
