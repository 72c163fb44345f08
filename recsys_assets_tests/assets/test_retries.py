"""Transient database errors are retried with backoff; everything else fails at once."""

import socket
import sqlite3

import dagster as dg
import psycopg2
import psycopg2.errors
import pytest

from recsys_assets.assets.retries import is_transient_db_error, retry_only_transient_db_errors
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


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg2.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg2.errors.AdminShutdown("terminating connection"), True),
        (psycopg2.InterfaceError("connection already closed"), True),
        (psycopg2.errors.UndefinedTable('relation "ratings" does not exist'), False),
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("no such table: ratings"), False),
        (sqlite3.OperationalError("unable to open database file"), False),
        (ValueError("bad data"), False),
    ],
)
def test_bare_driver_errors_are_classified_like_wrapped_ones(error, transient):
    # Raw-cursor paths (the server-side read, COPY) see the driver's errors unwrapped.
    assert is_transient_db_error(error) is transient


@pytest.fixture
def pg_ratings(postgres, monkeypatch):
    """A PostgreSQL schema with 300 ratings, read 50 rows per fetch (several round trips)."""
    import uuid

    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

    from recsys_assets import db

    base = postgres.url("postgres")
    schema = f"recsys_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    database = RatingsStore(url.render_as_string(hide_password=False), "native")
    database.ensure_schema()
    n = 300
    database.insert_ratings(
        pd.DataFrame(
            {
                "user_id": np.arange(n) % 7,
                "movie_id": np.arange(n),
                "rating": 1.0 + np.arange(n) % 5,
                "timestamp": np.arange(n) + 1,
            }
        )
    )
    monkeypatch.setattr(db.ratings, "_FETCH_ROWS", 50)
    yield database, admin, n
    db.dispose_engines()
    with admin.connect() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True))
    admin.dispose()


def _terminate(admin, like: str) -> int:
    import sqlalchemy as sa

    with admin.connect() as conn:
        return len(
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND query ILIKE :like"
                ),
                {"like": like},
            ).all()
        )


def test_postgres_backend_killed_during_the_ratings_read_is_retried(
    pg_ratings, monkeypatch, caplog
):
    """The tuple reader's server-side read raises the driver's bare OperationalError:
    retried, and the dead connection is discarded without a traceback from the pool."""
    from recsys_assets.db import ratings as db_ratings

    database, admin, n = pg_ratings
    normalize = db_ratings._normalize_ratings
    killed = []

    def kill_after_first_chunk(frame):
        if not killed:  # the server goes away between two fetches of the first attempt
            killed.append(_terminate(admin, "%recsys_read_ratings%"))
        return normalize(frame)

    monkeypatch.setattr(db_ratings, "_normalize_ratings", kill_after_first_chunk)
    read = []

    @dg.op(retry_policy=POLICY)
    def read_all(context: dg.OpExecutionContext):
        with retry_only_transient_db_errors(context):
            read.append(len(database.read_ratings(reader="tuples")))

    result = _run(read_all)
    assert killed == [1]
    assert result.success and _retries(result) == 1
    assert read == [n]
    assert not [r for r in caplog.records if r.name.startswith("sqlalchemy") and r.exc_info]


def test_pool_reset_on_a_dead_connection_logs_one_line(pg_ratings, caplog):
    """SQLAlchemy's "Exception during reset or similar" comes as one line naming the error."""
    import logging

    database, admin, _ = pg_ratings
    caplog.set_level(logging.INFO)
    raw = database.engine().raw_connection()  # as the raw-cursor paths (COPY, reads) use it
    with raw.cursor() as cursor:
        cursor.execute("SELECT 1 /* recsys-dying-connection */")
    assert _terminate(admin, "%recsys-dying-connection%") == 1
    raw.close()  # back to the pool: its reset (rollback) fails on the dead socket
    (record,) = [r for r in caplog.records if "Exception during reset" in r.getMessage()]
    assert record.exc_info is None
    assert "OperationalError" in record.getMessage()
    assert "terminating connection" in record.getMessage() or "closed" in record.getMessage()
