"""The ratings read through ADBC: the same frames as the tuple reader on SQLite and PostgreSQL,
and the tuple reader where ADBC cannot read as it would."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import psycopg2.extensions
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recsys_assets import db
from recsys_assets.data.cleaning import clean_ratings
from recsys_assets.db import adbc
from recsys_assets_tests.db.frames import ratings_frame

N = 250  # ratings written; several ADBC batches at the chunk sizes below
WHEN = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def both_engines(request: pytest.FixtureRequest, tmp_path) -> Engine:
    if request.param == "sqlite":
        return db.make_engine(f"sqlite:///{tmp_path / 'ratings.db'}", create=True)
    return request.getfixturevalue("pg_engine")


def _native_ratings(engine: Engine) -> list[int]:
    """N ratings, every 7th inactive, NULL ratings; the row ids a read must return."""
    db.ensure_schema(engine, "native")
    rows = [
        (u % 13, u, None if u % 11 == 0 else 0.5 + u % 10 / 2, 1_600_000_000 + u) for u in range(N)
    ]
    db.insert_ratings(engine, "native", ratings_frame(rows))
    table = db.schema.ratings
    with engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id % 7 == 0).values(active=False))
        return (
            conn.execute(sa.select(table.c.id).where(table.c.active.is_(True)).order_by(table.c.id))
            .scalars()
            .all()
        )


def _django_ratings(engine: Engine) -> list[int]:
    """N ratings in the Django app's tables: every 5th under another content type, every 7th
    inactive, NULL values and timestamps; the row ids a read must return."""
    db.create_django_tables(engine)
    ct, rr = db.schema.django_content_type, db.schema.ratings_rating
    rows = [
        {
            "id": i + 1,
            "user_id": i % 13,
            "object_id": i,
            "value": None if i % 11 == 0 else 0.5 + i % 10 / 2,
            "content_type_id": 2 if i % 5 == 3 else 1,
            "active": i % 7 != 0,
            "timestamp": None if i % 17 == 0 else WHEN + dt.timedelta(seconds=i),
        }
        for i in range(N)
    ]
    with engine.begin() as conn:
        conn.execute(
            ct.insert(),
            [
                {"id": 1, "app_label": "movies", "model": "movie"},
                {"id": 2, "app_label": "books", "model": "book"},
            ],
        )
        conn.execute(rr.insert(), rows)
    return [r["id"] for r in rows if r["active"] and r["content_type_id"] == 1]


@pytest.mark.parametrize("preset", ["native", "django"])
def test_adbc_reads_what_the_tuple_reader_reads(both_engines: Engine, preset: str) -> None:
    expected_ids = (_native_ratings if preset == "native" else _django_ratings)(both_engines)
    for chunksize in (None, 16):
        got = db.read_ratings_with_reader(both_engines, preset, chunksize)
        assert (got.reader, got.fallback) == ("adbc", None)
        baseline = db.read_ratings_with_reader(both_engines, preset, chunksize, reader="tuples")
        assert (baseline.reader, baseline.fallback) == ("tuples", None)
        pd.testing.assert_frame_equal(got.frame, baseline.frame, check_exact=True)
    frame = got.frame
    assert frame["rating_id"].tolist() == expected_ids  # inactive and other content types left out
    assert frame.dtypes.astype(str).tolist() == ["int64", "int64", "float64", "int64", "int64"]
    assert frame["rating"].isna().any() and (frame["timestamp"] > 0).any()
    # The store's read is this one.
    assert db.read_ratings(both_engines, preset).equals(frame)


def test_sqlite_read_sees_the_engines_last_commit(engine: Engine) -> None:
    """Python's sqlite3 and ADBC's SQLite in one process take turns on the file: with the
    engine's pooled connection left open, ADBC read the ratings before the UPDATE."""
    db.insert_ratings(engine, "native", ratings_frame([(1, 1, 3.0, 5), (1, 2, 4.5, 6)]))
    assert db.read_ratings(engine, "native")["rating"].tolist() == [3.0, 4.5]
    for value in (9.0, 7.0):
        with engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE ratings SET rating = {value}")
        got = db.read_ratings_with_reader(engine, "native")
        assert got.reader == "adbc" and got.frame["rating"].tolist() == [value, value]


def test_sqlite_file_in_use_by_the_engine_is_read_by_the_tuple_reader(engine: Engine) -> None:
    db.insert_ratings(engine, "native", ratings_frame([(1, 1, 3.0, 5)]))
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        got = db.read_ratings_with_reader(engine, "native")
    assert got.reader == "tuples" and "open in another connection" in got.fallback
    assert got.frame["rating"].tolist() == [3.0]


def test_empty_table_reads_as_empty_frame(both_engines: Engine) -> None:
    db.ensure_schema(both_engines, "native")
    got = db.read_ratings_with_reader(both_engines, "native")
    assert got.reader == "adbc" and got.frame.empty
    pd.testing.assert_frame_equal(
        got.frame, db.read_ratings(both_engines, "native", reader="tuples")
    )


@pytest.mark.parametrize("chunksize", [None, 1])
def test_text_rating_in_sqlite_is_read_by_the_tuple_reader(engine: Engine, chunksize) -> None:
    """Text in the first batch would make ADBC turn the column's numbers into text; in a later
    one ADBC fails on it. Both times the tuple reader reads it all, and cleaning counts it."""
    db.insert_ratings(engine, "native", ratings_frame([(1, 1, 3.0, 5), (1, 2, 4.5, 6)]))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO ratings (user_id, movie_id, rating, active, created_at) "
            "VALUES (2, 1, 'abc', 1, 7)"
        )
    got = db.read_ratings_with_reader(engine, "native", chunksize)
    assert got.reader == "tuples"
    assert "column rating arrives as string" in got.fallback or "got STRING" in got.fallback
    pd.testing.assert_frame_equal(
        got.frame, db.read_ratings(engine, "native", chunksize, reader="tuples")
    )
    assert got.frame["rating"].tolist() == [3.0, 4.5, "abc"]
    _, report = clean_ratings(got.frame, (0.5, 5.0))
    assert report.dropped["non_numeric_rating"] == 1 and report.rows_kept == 2


def test_numbers_among_date_text_are_read_by_the_tuple_reader(django_engine: Engine) -> None:
    """SQLite's DATETIME column holding unix seconds beside Django's text: ADBC would give the
    numbers as text (unparseable dates, 0); the tuple reader reads them as seconds."""
    db.ensure_schema(django_engine, "django")
    db.insert_ratings(django_engine, "django", ratings_frame([(1, 10, 4.0, 1_600_000_000)]))
    with django_engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO ratings_rating (user_id, value, content_type_id, object_id, active, "
            "timestamp) SELECT 2, 3.0, content_type_id, 11, 1, 1600000123 FROM ratings_rating"
        )
    got = db.read_ratings_with_reader(django_engine, "django")
    assert got.reader == "tuples" and "numbers among text" in got.fallback
    assert got.frame["timestamp"].tolist() == [1_600_000_000, 1_600_000_123]


@pytest.mark.integration
@pytest.mark.parametrize("column_type", ["real", "numeric(3, 1)"])
def test_postgres_types_adbc_would_convert_otherwise(pg_engine: Engine, column_type: str) -> None:
    """float4 (ADBC: float32, other doubles than the driver's) and NUMERIC (ADBC: Decimal or
    text, the driver: floats): the tuple reader reads them."""
    _native_ratings(pg_engine)
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE ratings ALTER COLUMN rating TYPE {column_type}")
        conn.exec_driver_sql("UPDATE ratings SET rating = 3.3 WHERE id = 2")
    got = db.read_ratings_with_reader(pg_engine, "native")
    assert got.reader == "tuples" and "column rating arrives as" in got.fallback
    baseline = db.read_ratings(pg_engine, "native", reader="tuples")
    pd.testing.assert_frame_equal(got.frame, baseline, check_exact=True)
    assert got.frame["rating"].dtype == np.float64 and got.frame["rating"].iloc[1] == 3.3


def test_in_memory_sqlite_is_read_by_the_tuple_reader() -> None:
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    db.ensure_schema(engine, "native")
    db.insert_ratings(engine, "native", ratings_frame([(1, 1, 3.0, 5)]))
    got = db.read_ratings_with_reader(engine, "native")
    assert got.reader == "tuples" and "in-memory" in got.fallback
    assert got.frame["rating"].tolist() == [3.0]


def test_unknown_reader_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="reader must be one of adbc, tuples, got 'arrow'"):
        db.read_ratings(engine, "native", reader="arrow")


@pytest.mark.parametrize(
    ("url", "uri"),
    [
        ("sqlite:////data/my ratings%.db", "file:/data/my%20ratings%25.db?mode=rw"),
        ("sqlite:///rel/r.db?timeout=5", "file:{cwd}/rel/r.db?mode=rw"),
    ],
)
def test_sqlite_urls_map_to_file_uris_that_never_create_the_file(url, uri, monkeypatch) -> None:
    monkeypatch.chdir("/tmp")
    assert adbc.adbc_uri(sa.create_engine(url)) == ("sqlite", uri.format(cwd="/tmp"))


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x.db?uri=true"])
def test_sqlite_urls_adbc_cannot_open_as_the_engine_does(url) -> None:
    with pytest.raises(adbc.AdbcRefused, match="in-memory or URI-named"):
        adbc.adbc_uri(sa.create_engine(url))


def test_postgres_url_maps_to_the_libpq_parameters_psycopg2_gets() -> None:
    url = (
        "postgresql+psycopg2://app:p%27w%5C%20d@/ratings?host=db1:5433&host=db2:5434"
        "&sslmode=require&options=-csearch_path%3Dapp%20-cstatement_timeout%3D0"
    )
    engine = sa.create_engine(url)
    driver, conninfo = adbc.adbc_uri(engine)
    assert driver == "postgresql"
    _, given = engine.dialect.create_connect_args(engine.url)
    # libpq's own parser (through psycopg2) reads back every parameter, quotes included.
    assert psycopg2.extensions.parse_dsn(conninfo) == {k: str(v) for k, v in given.items()}
    assert given["password"] == "p'w\\ d" and given["host"] == "db1,db2"


@pytest.mark.integration
def test_postgres_read_killed_mid_stream_is_read_again_by_tuples(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADBC's connection terminated between two batches: the tuple reader reads everything
    again, one snapshot, not half of each."""
    n = 300_000  # more than the socket buffers hold, so the kill lands mid-stream
    db.ensure_schema(pg_engine, "native")
    users = np.arange(n)
    frame = pd.DataFrame(
        {"user_id": users % 1000, "movie_id": users, "rating": 1.0 + users % 5, "timestamp": users}
    )
    db.insert_ratings(pg_engine, "native", frame)
    admin = sa.create_engine(pg_engine.url, isolation_level="AUTOCOMMIT")
    killed = []
    normalize = db.ratings._normalize_ratings

    def kill_after_first_batch(batch: pd.DataFrame) -> pd.DataFrame:
        if not killed:
            with admin.connect() as conn:
                killed.extend(
                    conn.exec_driver_sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> "
                        "pg_backend_pid() AND query LIKE 'COPY (SELECT ratings.user_id%%'"
                    ).scalars()
                )
        return normalize(batch)

    monkeypatch.setattr(db.ratings, "_normalize_ratings", kill_after_first_batch)
    try:
        got = db.read_ratings_with_reader(pg_engine, "native", chunksize=1000)
    finally:
        admin.dispose()
    assert killed == [True]
    assert got.reader == "tuples" and "terminating connection" in got.fallback
    assert len(got.frame) == n and got.frame["rating_id"].is_monotonic_increasing
