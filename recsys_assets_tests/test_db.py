"""recsys_assets.db against real SQLite files: both presets, raw reads, atomic prediction swaps."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recsys_assets import db


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    # A not-yet-existing subdirectory: make_engine(create=True) must create it.
    eng = db.make_engine(f"sqlite:///{tmp_path / 'nested' / 'ratings.db'}", create=True)
    db.ensure_schema(eng, "native")
    return eng


def _ratings(rows: list[tuple[int, int, float | None, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])


def _predictions(users: list[int], n: int = 3, score0: float = 5.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.repeat(users, n),
            "movie_id": np.tile(np.arange(100, 100 + n), len(users)),
            "rank": np.tile(np.arange(1, n + 1), len(users)),
            "score": np.tile(score0 - np.arange(n) * 0.1, len(users)),
        }
    )


# --- engines -------------------------------------------------------------------------------


def test_make_engine_caches_creates_dir_and_sets_pragmas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a' / 'b' / 'r.db'}"
    eng = db.make_engine(url, create=True)
    assert db.make_engine(url) is eng
    assert (tmp_path / "a" / "b").is_dir()
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_postgres_url_builds_engine_and_masks_password() -> None:
    url = "postgresql+psycopg2://recsys:s3cret@127.0.0.1:1/recsys"
    eng = db.make_engine(url)  # no connection is attempted until first use
    assert eng.dialect.name == "postgresql"
    assert eng.dialect.driver == "psycopg2"
    assert eng.pool._pre_ping is True
    masked = db.safe_url(eng)
    assert "s3cret" not in masked and "***" in masked
    assert db.safe_url(url) == masked


def test_missing_sqlite_file_is_an_error_and_nothing_is_created(tmp_path: Path) -> None:
    path = tmp_path / "typo" / "ratings.db"
    with pytest.raises(db.MissingDatabaseError, match=str(path)):
        db.make_engine(f"sqlite:///{path}")
    assert not path.parent.exists()


@pytest.mark.parametrize("key", ["password", "PASSWORD", "sslpassword"])
def test_safe_url_masks_a_password_given_as_a_query_parameter(key: str) -> None:
    url = f"postgresql+psycopg2://recsys@db.example/app?{key}=s3cret&sslmode=require"
    masked = db.safe_url(url)
    assert "s3cret" not in masked and "***" in masked and "sslmode=require" in masked
    assert "s3cret" not in db.safe_url("not a url s3cret")


def test_check_ratings_tables_names_table_url_and_preset(tmp_path: Path) -> None:
    eng = db.make_engine(f"sqlite:///{tmp_path / 'other.db'}", create=True)
    with pytest.raises(db.SchemaError, match=r"'ratings'.*other\.db.*'native'"):
        db.check_ratings_tables(eng, "native")
    with pytest.raises(db.SchemaError, match=r"'ratings_rating'.*'django'"):
        db.check_ratings_tables(eng, "django")
    db.ensure_schema(eng, "native")
    db.check_ratings_tables(eng, "native")


def test_unknown_preset_lists_allowed_values(engine: Engine) -> None:
    with pytest.raises(ValueError, match="native, django"):
        db.read_ratings(engine, "mysql; DROP TABLE ratings")
    with pytest.raises(ValueError, match="allowed values"):
        db.ensure_schema(engine, "Native")


# --- native preset -------------------------------------------------------------------------


def test_native_round_trip_excludes_inactive(engine: Engine) -> None:
    movies = pd.DataFrame({"id": [1, 2, 3], "title": ["A (1990)", "B, The (1991)", "Café"]})
    assert db.insert_movies(engine, "native", movies) == 3
    # Upsert: existing ids are skipped, new ones added, in-frame duplicates collapsed.
    more = pd.DataFrame({"id": [3, 4, 4], "title": ["changed", "D", "D2"]})
    assert db.insert_movies(engine, "native", more) == 1
    assert db.read_movie_titles(engine, "native") == {
        1: "A (1990)",
        2: "B, The (1991)",
        3: "Café",
        4: "D",
    }

    rows = [(10, 1, 4.0, 1000), (10, 2, None, 1001), (11, 1, 2.5, 1002), (11, 3, 5.0, 1003)]
    assert db.insert_ratings(engine, "native", _ratings(rows)) == 4
    with engine.begin() as conn:
        conn.execute(
            sa.update(db.schema.ratings)
            .where(db.schema.ratings.c.movie_id == 3)
            .values(active=False)
        )

    got = db.read_ratings(engine, "native")
    assert list(got.columns) == list(db.RATINGS_COLUMNS)
    assert got["user_id"].tolist() == [10, 10, 11]
    assert got["movie_id"].tolist() == [1, 2, 1]
    assert got["timestamp"].tolist() == [1000, 1001, 1002]
    assert got["rating_id"].is_monotonic_increasing and got["rating_id"].is_unique
    assert got["rating"].iloc[0] == 4.0 and np.isnan(got["rating"].iloc[1])
    assert got["rating"].iloc[2] == 2.5
    for col in ("user_id", "movie_id", "timestamp", "rating_id"):
        assert got[col].dtype == np.int64
    assert got["rating"].dtype == np.float64
    assert db.count_ratings(engine, "native") == 3

    # Chunked reads give the same frame, including a chunk whose only rating is NULL.
    for chunksize in (1, 2):
        pd.testing.assert_frame_equal(db.read_ratings(engine, "native", chunksize=chunksize), got)


def test_empty_database_reads_typed_empty_frame(engine: Engine) -> None:
    got = db.read_ratings(engine, "native")
    assert got.empty and list(got.columns) == list(db.RATINGS_COLUMNS)
    assert got["user_id"].dtype == np.int64
    assert db.count_ratings(engine, "native") == 0
    assert db.read_movie_titles(engine, "native") == {}


def test_string_in_rating_column_comes_back_raw(engine: Engine) -> None:
    db.insert_ratings(engine, "native", _ratings([(1, 1, 3.0, 5), (1, 2, 4.5, 6)]))
    # SQLite accepts any value in a FLOAT column; legacy data may hold such junk.
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO ratings (user_id, movie_id, rating, active, created_at) "
            "VALUES (2, 1, 'abc', 1, 7)"
        )
    got = db.read_ratings(engine, "native")
    assert got["rating"].dtype == object
    assert got["rating"].tolist() == [3.0, 4.5, "abc"]
    assert got["user_id"].tolist() == [1, 1, 2]
    pd.testing.assert_frame_equal(db.read_ratings(engine, "native", chunksize=1), got)


def test_text_ids_come_back_as_nan_for_cleaning_to_drop(engine: Engine) -> None:
    db.insert_ratings(engine, "native", _ratings([(1, 1, 3.0, 5), (1, 2, 4.5, 6)]))
    with engine.begin() as conn:  # SQLite stores text in a BIGINT column as text
        conn.exec_driver_sql(
            "INSERT INTO ratings (user_id, movie_id, rating, active, created_at) "
            "VALUES ('bob', 1, 4.0, 1, 7), (2, '7.5', 4.0, 1, 8), ('3', 3, 4.0, 1, 9)"
        )
    got = db.read_ratings(engine, "native")
    assert got["user_id"].tolist()[:2] == [1, 1] and np.isnan(got["user_id"].iloc[2])
    assert np.isnan(got["movie_id"].iloc[3]) and got["user_id"].iloc[4] == 3


def test_insert_ratings_accepts_datetimes_and_rejects_missing_columns(engine: Engine) -> None:
    frame = pd.DataFrame(
        {
            "user_id": [1],
            "movie_id": [2],
            "rating": [3.0],
            "timestamp": pd.to_datetime(["2021-06-01T00:00:00Z"]),
        }
    )
    db.insert_ratings(engine, "native", frame)
    assert db.read_ratings(engine, "native")["timestamp"].tolist() == [1622505600]
    with pytest.raises(ValueError, match="timestamp"):
        db.insert_ratings(engine, "native", frame.drop(columns="timestamp"))


def test_float_ids_are_stored_as_integers(engine: Engine) -> None:
    frame = _ratings([(1, 2, 3.0, 4)]).astype({"user_id": float, "movie_id": float})
    db.insert_ratings(engine, "native", frame)
    preds = _predictions([7], n=2).astype({"user_id": float, "rank": float})
    db.replace_predictions(engine, preds, "v1")
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT typeof(user_id), typeof(movie_id) FROM ratings")
        assert stored.one() == ("integer", "integer")
        stored = conn.exec_driver_sql("SELECT DISTINCT typeof(user_id) FROM user_predictions")
        assert stored.scalars().all() == ["integer"]
    assert db.read_predictions(engine)["rank"].tolist() == [1, 2]


def test_bulk_insert_batches_and_delete(engine: Engine) -> None:
    n = 2_500
    frame = _ratings([(i % 50, i, 1.0 + i % 5, i) for i in range(n)])
    assert db.insert_ratings(engine, "native", frame, batch_size=1_000) == n
    got = db.read_ratings(engine, "native")
    assert len(got) == n
    np.testing.assert_array_equal(got["movie_id"].to_numpy(), np.arange(n))
    db.insert_movies(engine, "native", pd.DataFrame({"id": [1], "title": ["x"]}))
    assert db.delete_ratings(engine, "native") == n
    assert db.count_ratings(engine, "native") == 0
    assert db.read_movie_titles(engine, "native") == {}


def test_ensure_schema_is_idempotent_and_creates_native_tables(engine: Engine) -> None:
    db.ensure_schema(engine, "native")
    inspector = sa.inspect(engine)
    assert {"movies", "ratings", "user_predictions"} <= set(inspector.get_table_names())
    index_cols = {tuple(ix["column_names"]) for ix in inspector.get_indexes("ratings")}
    assert {("user_id",), ("created_at",)} <= index_cols
    pred_index_cols = {
        tuple(ix["column_names"]) for ix in inspector.get_indexes("user_predictions")
    }
    assert ("user_id", "rank") in pred_index_cols  # unique; also serves per-user lookups


# --- django preset -------------------------------------------------------------------------


@pytest.fixture
def django_engine(tmp_path: Path) -> Engine:
    eng = db.make_engine(f"sqlite:///{tmp_path / 'django.db'}", create=True)
    db.create_django_tables(eng)
    return eng


def test_django_preset_reads_only_active_movie_ratings(django_engine: Engine) -> None:
    eng = django_engine
    ct, rr = db.schema.django_content_type, db.schema.ratings_rating
    with eng.begin() as conn:
        conn.execute(
            ct.insert(),
            [
                {"id": 1, "app_label": "auth", "model": "user"},
                {"id": 7, "app_label": "movies", "model": "movie"},
                {"id": 9, "app_label": "books", "model": "book"},
            ],
        )
        conn.execute(db.schema.movies_movie.insert(), [{"id": 5, "title": "Heat (1995)"}])
        when = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        base = {"content_type_id": 7, "active": True, "timestamp": when}
        conn.execute(
            rr.insert(),
            [
                {**base, "id": 1, "user_id": 1, "object_id": 5, "value": 4.0},
                {**base, "id": 2, "user_id": 1, "object_id": 6, "value": None},  # NULL kept
                {**base, "id": 3, "user_id": 2, "object_id": 5, "value": 3.0, "active": False},
                {**base, "id": 4, "user_id": 2, "object_id": 5, "value": 1.0, "content_type_id": 9},
                {**base, "id": 5, "user_id": 3, "object_id": 8, "value": 2.0, "timestamp": None},
            ],
        )
        # Timestamps as other writers leave them in SQLite: ISO 'T' with an offset.
        conn.exec_driver_sql(
            "INSERT INTO ratings_rating "
            "(id, user_id, value, content_type_id, object_id, active, timestamp) "
            "VALUES (6, 4, 5.0, 7, 9, 1, '2020-01-02T05:04:05+02:00')"
        )

    db.ensure_schema(eng, "django")
    assert sa.inspect(eng).has_table("user_predictions")

    got = db.read_ratings(eng, "django")
    expected_ts = int(when.timestamp())
    assert got["rating_id"].tolist() == [1, 2, 5, 6]
    assert got["user_id"].tolist() == [1, 1, 3, 4]
    assert got["movie_id"].tolist() == [5, 6, 8, 9]
    assert got["rating"].iloc[0] == 4.0 and np.isnan(got["rating"].iloc[1])
    assert got["timestamp"].tolist() == [expected_ts, expected_ts, 0, expected_ts]
    assert got["timestamp"].dtype == np.int64 and got["movie_id"].dtype == np.int64
    assert db.count_ratings(eng, "django") == 4
    assert db.read_movie_titles(eng, "django") == {5: "Heat (1995)"}


def test_django_insert_creates_movie_content_type(django_engine: Engine) -> None:
    db.ensure_schema(django_engine, "django")
    frame = _ratings([(1, 10, 4.0, 1_600_000_000), (2, 11, 3.5, 1_600_000_123)])
    assert db.insert_ratings(django_engine, "django", frame) == 2
    assert db.insert_movies(django_engine, "django", pd.DataFrame({"id": [10], "title": ["T"]}))
    got = db.read_ratings(django_engine, "django")
    assert got[["user_id", "movie_id", "timestamp"]].values.tolist() == [
        [1, 10, 1_600_000_000],
        [2, 11, 1_600_000_123],
    ]
    assert got["rating"].tolist() == [4.0, 3.5]
    with django_engine.connect() as conn:
        cts = conn.execute(sa.select(db.schema.django_content_type.c.app_label)).scalars().all()
    assert cts == ["movies"]
    # A second insert reuses the content type.
    db.insert_ratings(django_engine, "django", frame)
    assert db.count_ratings(django_engine, "django") == 4
    assert db.delete_ratings(django_engine, "django") == 4


def test_django_preset_requires_existing_tables(tmp_path: Path) -> None:
    eng = db.make_engine(f"sqlite:///{tmp_path / 'empty.db'}", create=True)
    with pytest.raises(db.SchemaError, match="ratings_rating"):
        db.ensure_schema(eng, "django")
    assert not sa.inspect(eng).has_table("user_predictions")


# --- predictions ---------------------------------------------------------------------------


def test_replace_predictions_replaces_everything(engine: Engine) -> None:
    assert db.replace_predictions(engine, _predictions([1, 2]), "v1", created_at=111) == 6
    assert db.replace_predictions(engine, _predictions([2, 3], n=2), "v2", created_at=222) == 4
    got = db.read_predictions(engine)
    assert got["user_id"].tolist() == [2, 2, 3, 3]
    assert set(got["model_version"]) == {"v2"}
    assert set(got["created_at"]) == {222}
    assert got["rank"].tolist() == [1, 2, 1, 2]
    assert got["score"].dtype == np.float64 and got["movie_id"].dtype == np.int64
    one = db.read_predictions(engine, user_id=3)
    assert one["user_id"].tolist() == [3, 3] and one["movie_id"].tolist() == [100, 101]


def test_replace_predictions_for_given_users_only(engine: Engine) -> None:
    db.replace_predictions(engine, _predictions([1, 2, 3]), "v1")
    written = db.replace_predictions(engine, _predictions([2], n=1, score0=9.0), "v2", users=[2])
    assert written == 1
    got = db.read_predictions(engine)
    assert got.groupby("user_id")["model_version"].agg(set).to_dict() == {
        1: {"v1"},
        2: {"v2"},
        3: {"v1"},
    }
    assert db.read_predictions(engine, user_id=2)["score"].tolist() == [9.0]
    # A listed user with no new rows just loses the old ones.
    db.replace_predictions(engine, _predictions([]), "v3", users=[3])
    assert sorted(set(db.read_predictions(engine)["user_id"])) == [1, 2]
    with pytest.raises(ValueError, match="not listed"):
        db.replace_predictions(engine, _predictions([1, 4]), "v4", users=[1])


def test_failed_replace_keeps_previous_predictions(engine: Engine) -> None:
    db.replace_predictions(engine, _predictions([1, 2, 3]), "good")
    before = db.read_predictions(engine)

    # NOT NULL violation in the third batch: the delete and two batches already ran.
    bad = _predictions([4, 5, 6]).astype({"user_id": object})
    bad.loc[7, "user_id"] = None
    with pytest.raises(sa.exc.IntegrityError):
        db.replace_predictions(engine, bad, "broken", batch_size=3)
    pd.testing.assert_frame_equal(db.read_predictions(engine), before)

    # Non-numeric score: rejected while binding the second batch.
    bad_score = _predictions([4, 5]).astype({"score": object})
    bad_score.loc[4, "score"] = "high"
    with pytest.raises(sa.exc.StatementError):
        db.replace_predictions(engine, bad_score, "broken", batch_size=2)
    pd.testing.assert_frame_equal(db.read_predictions(engine), before)

    # Same guarantee for a per-user replace.
    with pytest.raises(sa.exc.IntegrityError):
        db.replace_predictions(engine, bad, "broken", users=[4, 5, 6], batch_size=3)
    pd.testing.assert_frame_equal(db.read_predictions(engine), before)


def test_read_predictions_empty_is_typed(engine: Engine) -> None:
    got = db.read_predictions(engine)
    assert got.empty and list(got.columns) == list(db.PREDICTION_COLUMNS)
    assert got["user_id"].dtype == np.int64 and got["score"].dtype == np.float64


# --- conversions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pd.Series([5, 6]), [5, 6]),
        (pd.Series([5.0, np.nan]), [5, 0]),
        (pd.Series(["1970-01-01 00:01:40", None, "not a date"]), [100, 0, 0]),
        (pd.Series(["1970-01-01T01:00:00+01:00", "1970-01-01 00:00:07.500000"]), [0, 7]),
        (pd.Series([dt.datetime(1970, 1, 2), None], dtype=object), [86400, 0]),
        (pd.Series(pd.to_datetime(["1970-01-01 00:00:09"], utc=True)), [9]),
        (pd.Series([], dtype=object), []),
    ],
)
def test_to_unix_seconds(values: pd.Series, expected: list[int]) -> None:
    got = db.to_unix_seconds(values)
    assert got.dtype == np.int64
    assert got.tolist() == expected


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture
def pg_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A throwaway schema in the database named by RECSYS_TEST_POSTGRES_URL, else in the
    throwaway server of the `postgres` fixture (skipped without PostgreSQL, failed under CI)."""
    base = os.environ.get("RECSYS_TEST_POSTGRES_URL")
    if not base:
        base = request.getfixturevalue("postgres").url("postgres")
    schema = f"recsys_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    eng = db.make_engine(url.render_as_string(hide_password=False))
    try:
        yield eng
    finally:
        eng.dispose()
        with admin.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True))
        admin.dispose()


@pytest.mark.integration
def test_postgres_native_and_django_presets(pg_engine: Engine) -> None:
    db.ensure_schema(pg_engine, "native")
    db.insert_movies(pg_engine, "native", pd.DataFrame({"id": [1, 2], "title": ["A", "B"]}))
    rows = [(1, 1, 4.0, 100), (1, 2, None, 101), (2, 1, 2.5, 102)]
    db.insert_ratings(pg_engine, "native", _ratings(rows))
    got = db.read_ratings(pg_engine, "native")
    assert got[["user_id", "movie_id", "timestamp"]].values.tolist() == [
        [1, 1, 100],
        [1, 2, 101],
        [2, 1, 102],
    ]
    assert np.isnan(got["rating"].iloc[1]) and got["rating"].dtype == np.float64
    # Server-side cursor path.
    pd.testing.assert_frame_equal(db.read_ratings(pg_engine, "native", chunksize=2), got)

    db.replace_predictions(pg_engine, _predictions([1, 2]), "good")
    before = db.read_predictions(pg_engine)
    bad = _predictions([3, 4]).astype({"user_id": object})
    bad.loc[4, "user_id"] = None
    with pytest.raises(sa.exc.IntegrityError):
        db.replace_predictions(pg_engine, bad, "broken", batch_size=2)
    pd.testing.assert_frame_equal(db.read_predictions(pg_engine), before)

    db.create_django_tables(pg_engine)
    db.ensure_schema(pg_engine, "django")
    db.insert_ratings(pg_engine, "django", _ratings([(5, 7, 3.0, 1_600_000_000)]))
    dj = db.read_ratings(pg_engine, "django")
    assert dj[["user_id", "movie_id", "timestamp"]].values.tolist() == [[5, 7, 1_600_000_000]]


# --- bulk paths (COPY on PostgreSQL, chunked executemany on SQLite) ---------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(request: pytest.FixtureRequest, engine: Engine) -> Engine:
    if request.param == "sqlite":
        return engine
    pg = request.getfixturevalue("pg_engine")
    db.ensure_schema(pg, "native")
    return pg


def test_bulk_insert_and_atomic_bulk_replace(
    any_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small thresholds so a few rows take the same path as 25M: chunks + index rebuild.
    monkeypatch.setattr(db.bulk, "REINDEX_MIN_ROWS", 1)
    monkeypatch.setattr(db.bulk, "BULK_ROWS", 4)
    rows = [(u, m, 0.5 + (u * m) % 10 / 2, 1000 + u) for u in range(1, 4) for m in range(1, 4)]
    ratings = _ratings(rows).astype({"user_id": np.int32, "rating": np.float32})
    ratings.loc[4, "rating"] = np.nan  # NULL survives the bulk path as NULL
    assert db.insert_ratings(any_engine, "native", ratings) == 9
    got = db.read_ratings(any_engine, "native")
    assert got[["user_id", "movie_id", "timestamp"]].values.tolist() == [
        [u, m, t] for u, m, _, t in rows
    ]
    assert np.isnan(got["rating"].iloc[4]) and got["rating"].iloc[0] == rows[0][2]
    indexes = {ix["name"] for ix in sa.inspect(any_engine).get_indexes("ratings")}
    assert {"ix_ratings_user_id", "ix_ratings_created_at"} <= indexes

    db.replace_predictions(any_engine, _predictions([1, 2, 3]), "good", batch_size=2)
    before = db.read_predictions(any_engine)
    assert len(before) == 9 and set(before["model_version"]) == {"good"}
    # A NULL score in the third chunk: the delete and two chunks already ran, all rolled back.
    bad = _predictions([4, 5, 6])
    bad.loc[5, "score"] = np.nan
    with pytest.raises(sa.exc.IntegrityError):
        db.replace_predictions(any_engine, bad, "broken", batch_size=2)
    pd.testing.assert_frame_equal(db.read_predictions(any_engine), before)
    assert {ix["name"] for ix in sa.inspect(any_engine).get_indexes("user_predictions")} == {
        "ux_user_predictions_user_rank"
    }
