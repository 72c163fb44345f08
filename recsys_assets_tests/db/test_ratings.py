"""Ratings reads, counts, inserts and deletes (native preset), raw values, conversions."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recsys_assets import db
from recsys_assets.db.predictions import IN_CHUNK, in_chunks
from recsys_assets_tests.db.frames import predictions_frame, ratings_frame


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
    assert db.insert_ratings(engine, "native", ratings_frame(rows)) == 4
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
    db.insert_ratings(engine, "native", ratings_frame([(1, 1, 3.0, 5), (1, 2, 4.5, 6)]))
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
    db.insert_ratings(engine, "native", ratings_frame([(1, 1, 3.0, 5), (1, 2, 4.5, 6)]))
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
    frame = ratings_frame([(1, 2, 3.0, 4)]).astype({"user_id": float, "movie_id": float})
    db.insert_ratings(engine, "native", frame)
    preds = predictions_frame([7], n=2).astype({"user_id": float, "rank": float})
    db.replace_predictions(engine, preds, "v1")
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT typeof(user_id), typeof(movie_id) FROM ratings")
        assert stored.one() == ("integer", "integer")
        stored = conn.exec_driver_sql("SELECT DISTINCT typeof(user_id) FROM user_predictions")
        assert stored.scalars().all() == ["integer"]
    assert db.read_predictions(engine)["rank"].tolist() == [1, 2]


def test_bulk_insert_batches_and_delete(engine: Engine) -> None:
    n = 2_500
    frame = ratings_frame([(i % 50, i, 1.0 + i % 5, i) for i in range(n)])
    assert db.insert_ratings(engine, "native", frame, batch_size=1_000) == n
    got = db.read_ratings(engine, "native")
    assert len(got) == n
    np.testing.assert_array_equal(got["movie_id"].to_numpy(), np.arange(n))
    db.insert_movies(engine, "native", pd.DataFrame({"id": [1], "title": ["x"]}))
    assert db.delete_ratings(engine, "native") == n
    assert db.count_ratings(engine, "native") == 0
    assert db.read_movie_titles(engine, "native") == {}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pd.Series([5, 6]), [5, 6]),
        (pd.Series([5.0, np.nan]), [5, 0]),
        (pd.Series(["1970-01-01 00:01:40", None, "not a date"]), [100, 0, 0]),
        (pd.Series(["1970-01-01T01:00:00+01:00", "1970-01-01 00:00:07.500000"]), [0, 7]),
        (pd.Series([dt.datetime(1970, 1, 2), None], dtype=object), [86400, 0]),
        (pd.Series(pd.to_datetime(["1970-01-01 00:00:09"], utc=True)), [9]),
        # One bad text value beside numbers (SQLite's untyped column): the numbers stay seconds.
        (
            pd.Series([4102444800, "garbage", 7.0, None, "1970-01-01 00:01:40"]),
            [4102444800, 0, 7, 0, 100],
        ),
        (pd.Series([], dtype=object), []),
    ],
)
def test_to_unix_seconds(values: pd.Series, expected: list[int]) -> None:
    got = db.to_unix_seconds(values)
    assert got.dtype == np.int64
    assert got.tolist() == expected


@pytest.mark.parametrize("n", [0, 1, 499, 500, 501, 1000, 1234])
def test_in_chunks_yields_every_id_once_in_order(n: int) -> None:
    values = list(range(7, 7 + n))
    chunks = list(in_chunks(values))
    assert [v for chunk in chunks for v in chunk] == values
    assert all(0 < len(chunk) <= IN_CHUNK for chunk in chunks)
    assert len(chunks) == -(-n // IN_CHUNK)


def test_reads_and_replaces_for_more_than_500_users(any_engine: Engine) -> None:
    """1,234 users: three `IN` lists in each read and in the delete; none is missed."""
    users = np.arange(1, 1235)
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(users, 2),
            "movie_id": np.tile([10, 20], users.size),
            "rating": np.tile([4.0, None], users.size),
            "timestamp": 1,
        }
    )
    db.insert_ratings(any_engine, "native", frame)
    asked = [*users.tolist(), 99_999]  # one more user without ratings
    got = db.read_user_ratings(any_engine, "native", asked)
    assert sorted(got.loc[got["movie_id"] == 10, "user_id"].tolist()) == users.tolist()
    assert len(got) == 2 * users.size
    unrated = db.read_unrated_pairs(any_engine, "native", asked)
    assert unrated["user_id"].tolist() == users.tolist() and set(unrated["movie_id"]) == {20}

    def top(movie: int) -> pd.DataFrame:
        return pd.DataFrame({"user_id": users, "movie_id": movie, "rank": 1, "score": 4.0})

    db.replace_predictions(any_engine, top(30), "v1")
    # Every user's old row goes, whichever `IN` list it is in (else: a duplicate rank).
    assert db.replace_predictions(any_engine, top(40), "v2", users=asked) == users.size
    table = db.read_predictions(any_engine)
    assert len(table) == users.size and set(table["movie_id"]) == {40}
