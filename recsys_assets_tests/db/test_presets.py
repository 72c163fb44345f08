"""Schema presets: native and django tables, ensure_schema, checks naming what is missing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recsys_assets import db
from recsys_assets_tests.db.frames import ratings_frame


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
    frame = ratings_frame([(1, 10, 4.0, 1_600_000_000), (2, 11, 3.5, 1_600_000_123)])
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
