"""The same queries on PostgreSQL: both presets, COPY bulk paths, atomic replacement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recsys_assets import db
from recsys_assets_tests.db.frames import predictions_frame, ratings_frame


@pytest.mark.integration
def test_postgres_native_and_django_presets(pg_engine: Engine) -> None:
    db.ensure_schema(pg_engine, "native")
    db.insert_movies(pg_engine, "native", pd.DataFrame({"id": [1, 2], "title": ["A", "B"]}))
    rows = [(1, 1, 4.0, 100), (1, 2, None, 101), (2, 1, 2.5, 102)]
    db.insert_ratings(pg_engine, "native", ratings_frame(rows))
    got = db.read_ratings(pg_engine, "native")
    assert got[["user_id", "movie_id", "timestamp"]].values.tolist() == [
        [1, 1, 100],
        [1, 2, 101],
        [2, 1, 102],
    ]
    assert np.isnan(got["rating"].iloc[1]) and got["rating"].dtype == np.float64
    # Server-side cursor path.
    pd.testing.assert_frame_equal(db.read_ratings(pg_engine, "native", chunksize=2), got)

    db.replace_predictions(pg_engine, predictions_frame([1, 2]), "good")
    before = db.read_predictions(pg_engine)
    bad = predictions_frame([3, 4]).astype({"user_id": object})
    bad.loc[4, "user_id"] = None
    with pytest.raises(sa.exc.IntegrityError):
        db.replace_predictions(pg_engine, bad, "broken", batch_size=2)
    pd.testing.assert_frame_equal(db.read_predictions(pg_engine), before)

    db.create_django_tables(pg_engine)
    db.ensure_schema(pg_engine, "django")
    db.insert_ratings(pg_engine, "django", ratings_frame([(5, 7, 3.0, 1_600_000_000)]))
    dj = db.read_ratings(pg_engine, "django")
    assert dj[["user_id", "movie_id", "timestamp"]].values.tolist() == [[5, 7, 1_600_000_000]]


def test_bulk_insert_and_atomic_bulk_replace(
    any_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small thresholds so a few rows take the same path as 25M: chunks + index rebuild.
    monkeypatch.setattr(db.bulk, "REINDEX_MIN_ROWS", 1)
    monkeypatch.setattr(db.bulk, "BULK_ROWS", 4)
    rows = [(u, m, 0.5 + (u * m) % 10 / 2, 1000 + u) for u in range(1, 4) for m in range(1, 4)]
    ratings = ratings_frame(rows).astype({"user_id": np.int32, "rating": np.float32})
    ratings.loc[4, "rating"] = np.nan  # NULL survives the bulk path as NULL
    assert db.insert_ratings(any_engine, "native", ratings) == 9
    got = db.read_ratings(any_engine, "native")
    assert got[["user_id", "movie_id", "timestamp"]].values.tolist() == [
        [u, m, t] for u, m, _, t in rows
    ]
    assert np.isnan(got["rating"].iloc[4]) and got["rating"].iloc[0] == rows[0][2]
    indexes = {ix["name"] for ix in sa.inspect(any_engine).get_indexes("ratings")}
    assert {"ix_ratings_user_id", "ix_ratings_created_at"} <= indexes

    db.replace_predictions(any_engine, predictions_frame([1, 2, 3]), "good", batch_size=2)
    before = db.read_predictions(any_engine)
    assert len(before) == 9 and set(before["model_version"]) == {"good"}
    # A NULL score in the third chunk: the delete and two chunks already ran, all rolled back.
    bad = predictions_frame([4, 5, 6])
    bad.loc[5, "score"] = np.nan
    with pytest.raises(sa.exc.IntegrityError):
        db.replace_predictions(any_engine, bad, "broken", batch_size=2)
    pd.testing.assert_frame_equal(db.read_predictions(any_engine), before)
    assert {ix["name"] for ix in sa.inspect(any_engine).get_indexes("user_predictions")} == {
        "ux_user_predictions_user_rank"
    }
