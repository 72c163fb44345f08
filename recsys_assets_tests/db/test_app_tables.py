"""recsys_assets.db as the Django app sees it: the predictions table it models, the configurable
django layout, content-type-scoped change tracking and movies rated without a value.

Each backend test runs on SQLite and on a throwaway PostgreSQL schema.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recsys_assets import db
from recsys_assets.resources.ratings_db import RatingsDatabase


@pytest.fixture(params=["sqlite", "postgresql"])
def bare_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    """An empty database on either backend (no tables yet)."""
    if request.param == "sqlite":
        return db.make_engine(f"sqlite:///{tmp_path / 'app.db'}", create=True)
    return request.getfixturevalue("pg_engine")


def _predictions(users: list[int], n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.repeat(users, n),
            "movie_id": np.tile(np.arange(100, 100 + n), len(users)),
            "rank": np.tile(np.arange(1, n + 1), len(users)),
            "score": np.tile(5.0 - np.arange(n) * 0.1, len(users)),
            "source": "svd",
        }
    )


# --- the predictions table -----------------------------------------------------------------


def test_predictions_table_has_a_key_and_a_real_timestamp(bare_engine: Engine) -> None:
    db.ensure_schema(bare_engine, "native")
    inspector = sa.inspect(bare_engine)
    assert inspector.get_pk_constraint("user_predictions")["constrained_columns"] == ["id"]
    (unique,) = [ix for ix in inspector.get_indexes("user_predictions") if ix["unique"]]
    assert unique["column_names"] == ["user_id", "rank"]
    columns = {c["name"]: c["type"] for c in inspector.get_columns("user_predictions")}
    assert isinstance(columns["created_at"], sa.DateTime)

    stamp = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    # Both write paths: numpy columns (bulk: COPY / executemany) and object columns (Core).
    db.replace_predictions(bare_engine, _predictions([1, 2]), "v1", created_at=stamp)
    objects = _predictions([3]).astype({"user_id": object})
    db.replace_predictions(bare_engine, objects, "v2", created_at=stamp, users=[3])
    got = db.read_predictions(bare_engine)
    assert set(got["created_at"]) == {int(stamp.timestamp())}
    assert got["source"].tolist() == ["svd"] * 9
    with bare_engine.connect() as conn:
        ids = conn.execute(sa.text("SELECT id FROM user_predictions")).scalars().all()
        raw = (
            conn.execute(sa.select(db.schema.native_user_predictions.c.created_at)).scalars().all()
        )
    assert len(set(ids)) == 9 and all(isinstance(i, int) for i in ids)
    # What an ORM reads: a datetime of that instant (naive UTC on SQLite, as Django stores it).
    assert {r.replace(tzinfo=dt.UTC) if r.tzinfo is None else r for r in raw} == {stamp}

    # A second row for the same (user, rank) is refused by the database itself.
    with bare_engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(
            db.schema.native_user_predictions.insert().values(
                user_id=1, movie_id=1, rank=1, score=1.0, model_version="x", created_at=stamp
            )
        )


_OLD_SHAPE = """
CREATE TABLE user_predictions (
    user_id BIGINT NOT NULL, movie_id BIGINT NOT NULL, rank INTEGER NOT NULL,
    score FLOAT NOT NULL, model_version TEXT NOT NULL, created_at BIGINT NOT NULL{source}
)
"""


@pytest.mark.parametrize("with_source", [True, False], ids=["source", "no-source"])
def test_old_predictions_table_is_migrated_in_place(bare_engine: Engine, with_source) -> None:
    with bare_engine.begin() as conn:
        conn.exec_driver_sql(
            _OLD_SHAPE.format(source=", source VARCHAR(16)" if with_source else "")
        )
        conn.exec_driver_sql(
            "CREATE INDEX ix_user_predictions_user_id ON user_predictions (user_id)"
        )
        columns = "user_id, movie_id, rank, score, model_version, created_at"
        conn.exec_driver_sql(
            f"INSERT INTO user_predictions ({columns}) VALUES "
            "(7, 10, 1, 4.5, 'old', 1700000000), (7, 11, 2, 4.25, 'old', 1700000000)"
        )
    db.ensure_schema(bare_engine, "native")
    db.ensure_schema(bare_engine, "native")  # idempotent once upgraded

    inspector = sa.inspect(bare_engine)
    assert inspector.get_pk_constraint("user_predictions")["constrained_columns"] == ["id"]
    assert {ix["name"] for ix in inspector.get_indexes("user_predictions")} == {
        "ux_user_predictions_user_rank"
    }
    types = {c["name"]: c["type"] for c in inspector.get_columns("user_predictions")}
    assert isinstance(types["created_at"], sa.DateTime)
    assert set(inspector.get_table_names()) >= {"user_predictions"}
    assert not any(name.endswith("_before_pk") for name in inspector.get_table_names())
    kept = db.read_predictions(bare_engine)
    assert kept[["user_id", "movie_id", "rank", "created_at"]].values.tolist() == [
        [7, 10, 1, 1_700_000_000],
        [7, 11, 2, 1_700_000_000],
    ]
    assert kept["score"].tolist() == [4.5, 4.25] and kept["model_version"].tolist() == ["old"] * 2
    # The upgraded table takes new writes (ids continue past the migrated rows).
    db.replace_predictions(bare_engine, _predictions([7, 8]), "new", users=[7, 8])
    assert len(db.read_predictions(bare_engine)) == 6


# --- the configurable django layout ----------------------------------------------------------

FILMS = db.DjangoSchema(
    content_type="catalog.film",
    ratings_table="reviews_review",
    movies_table="catalog_film",
    content_type_table="django_content_type",
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"content_type": "movies"}, "RECSYS_DJANGO_CONTENT_TYPE.*'app_label.model'"),
        ({"content_type": "movies.Movie"}, "lower case \\(movies.movie\\)"),
        ({"ratings_table": "ratings; drop"}, "RECSYS_DJANGO_RATINGS_TABLE"),
        ({"movies_table": "user_predictions"}, "must differ"),
        ({"movies_table": "ratings_rating"}, "must differ"),
    ],
)
def test_django_schema_is_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        db.DjangoSchema(**kwargs)


def test_django_layout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_SCHEMA", "django")
    monkeypatch.setenv("RECSYS_DJANGO_CONTENT_TYPE", "catalog.film")
    monkeypatch.setenv("RECSYS_DJANGO_RATINGS_TABLE", "reviews_review")
    monkeypatch.setenv("RECSYS_DJANGO_MOVIES_TABLE", "catalog_film")
    database = RatingsDatabase.from_env()
    assert database.django_schema() == FILMS
    monkeypatch.setenv("RECSYS_DJANGO_CONTENT_TYPE", "film")
    with pytest.raises(ValueError, match="RECSYS_DJANGO_CONTENT_TYPE"):
        RatingsDatabase.from_env()


def _django_rows(engine: Engine, schema: db.DjangoSchema) -> dict[str, int]:
    """Two content types (the rated one and a TV show) with active, inactive and NULL rows."""
    tables = db.schema.django_tables(schema)
    ct, rr = tables.content_type, tables.ratings
    ts = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            ct.insert(),
            [
                {"id": 1, "app_label": schema.app_label, "model": schema.model},
                {"id": 2, "app_label": "shows", "model": "tvshow"},
            ],
        )
        rows = [
            # (user, ct, object, value, active)
            (1, 1, 10, 4.0, True),
            (1, 1, 11, None, True),  # rated without a value: not trained on, not suggested
            (1, 1, 12, 2.0, False),  # an older, deactivated rating
            (2, 1, 10, 5.0, True),
            (2, 2, 10, None, True),  # a TV show with the same object id
            (3, 2, 11, 3.0, False),  # a deactivated TV-show rating
            (3, 2, 12, 3.0, False),
        ]
        conn.execute(
            rr.insert(),
            [
                {
                    "user_id": u,
                    "content_type_id": c,
                    "object_id": o,
                    "value": v,
                    "active": a,
                    "timestamp": ts,
                }
                for u, c, o, v, a in rows
            ],
        )
    return {"movie_inactive": 1, "all_inactive": 3}


def test_custom_django_layout_reads_only_its_content_type(bare_engine: Engine) -> None:
    db.create_django_tables(bare_engine, FILMS)
    db.ensure_schema(bare_engine, FILMS)
    counts = _django_rows(bare_engine, FILMS)
    got = db.read_ratings(bare_engine, FILMS)
    assert got[["user_id", "movie_id"]].values.tolist() == [[1, 10], [1, 11], [2, 10]]
    mark = db.ratings_watermark(bare_engine, FILMS)
    # Deactivations of TV-show ratings do not count towards retraining the movie model.
    assert mark.inactive == counts["movie_inactive"] == 1 and mark.max_id == 7
    assert db.ratings_changes(bare_engine, FILMS, 0, 7).user_ids == [1, 2]
    unrated = db.read_unrated_pairs(bare_engine, FILMS)
    assert unrated.values.tolist() == [[1, 11]]
    assert db.read_unrated_pairs(bare_engine, FILMS, [2]).empty
    # The project created its own table only.
    tables = set(sa.inspect(bare_engine).get_table_names())
    assert tables == {"django_content_type", "reviews_review", "catalog_film", "user_predictions"}


def test_ensure_schema_names_what_is_wrong_with_the_django_layout(bare_engine: Engine) -> None:
    db.create_django_tables(bare_engine)
    _django_rows(bare_engine, db.DEFAULT_DJANGO_SCHEMA)
    db.ensure_schema(bare_engine, "django")
    wrong_type = db.DjangoSchema(content_type="movies.film")
    with pytest.raises(db.SchemaError, match="'movies.film' is not registered.*movies.movie"):
        db.ensure_schema(bare_engine, wrong_type)
    wrong_table = db.DjangoSchema(ratings_table="movies_movie", movies_table="ratings_rating")
    with pytest.raises(db.SchemaError, match="lacks the columns"):
        db.ensure_schema(bare_engine, wrong_table)
    missing = db.DjangoSchema(ratings_table="reviews")
    with pytest.raises(db.SchemaError, match="'reviews', which is missing"):
        db.ensure_schema(bare_engine, missing)


# --- a database the app made: user_predictions on first write, app tables untouched ---------

_APP_DDL = {
    "native": [
        "CREATE TABLE movies (id INTEGER PRIMARY KEY, title TEXT)",
        "CREATE TABLE ratings (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, movie_id BIGINT "
        "NOT NULL, rating FLOAT, active BOOLEAN NOT NULL, created_at BIGINT NOT NULL)",
        "INSERT INTO movies VALUES (10, 'A'), (11, 'B')",
        "INSERT INTO ratings VALUES (1, 7, 10, 4.0, TRUE, 1700000000)",
    ],
    "django": [
        "CREATE TABLE django_content_type (id INTEGER PRIMARY KEY, app_label VARCHAR(100) "
        "NOT NULL, model VARCHAR(100) NOT NULL)",
        "CREATE TABLE ratings_rating (id INTEGER PRIMARY KEY, user_id BIGINT NOT NULL, value "
        "FLOAT, content_type_id INTEGER NOT NULL, object_id BIGINT NOT NULL, active BOOLEAN "
        "NOT NULL, timestamp TIMESTAMP)",
        "INSERT INTO django_content_type VALUES (1, 'movies', 'movie')",
        "INSERT INTO ratings_rating VALUES (1, 7, 4.0, 1, 10, TRUE, '2024-01-01 00:00:00')",
    ],
}


def _app_tables(engine: Engine) -> dict[str, list]:
    """Every table but user_predictions: its columns and rows, to compare before and after."""
    inspector = sa.inspect(engine)
    out = {}
    for name in inspector.get_table_names():
        if name == db.PREDICTIONS_TABLE:
            continue
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(f'SELECT * FROM "{name}" ORDER BY 1').fetchall()
        columns = [(c["name"], str(c["type"])) for c in inspector.get_columns(name)]
        out[name] = [columns, inspector.get_indexes(name), [tuple(r) for r in rows]]
    return out


@pytest.mark.parametrize("preset", ["native", "django"])
def test_first_write_creates_user_predictions_and_leaves_the_app_tables(
    bare_engine: Engine, preset: str
) -> None:
    # No ensure_schema: the database is the app's, as on a fresh production install.
    with bare_engine.begin() as conn:
        for statement in _APP_DDL[preset]:
            conn.exec_driver_sql(statement)
    before = _app_tables(bare_engine)
    store = db.RatingsStore(bare_engine.url.render_as_string(hide_password=False), preset)
    assert len(store.read_ratings()) == 1
    assert store.replace_predictions(_predictions([7]), "v1") == 3
    assert store.replace_predictions(_predictions([7, 8]), "v2") == 6  # again: already there
    assert set(store.read_predictions()["model_version"]) == {"v2"}
    assert _app_tables(bare_engine) == before


def test_first_write_upgrades_an_old_predictions_table(bare_engine: Engine) -> None:
    with bare_engine.begin() as conn:
        conn.exec_driver_sql(_OLD_SHAPE.format(source=""))
    store = db.RatingsStore(bare_engine.url.render_as_string(hide_password=False))
    store.replace_predictions(_predictions([7]), "v1")
    assert "id" in {c["name"] for c in sa.inspect(bare_engine).get_columns("user_predictions")}
    assert len(store.read_predictions()) == 3


@pytest.mark.parametrize("preset, table", [("native", "ratings"), ("django", "ratings_rating")])
def test_a_missing_ratings_table_is_named(bare_engine: Engine, preset: str, table: str) -> None:
    url = bare_engine.url.render_as_string(hide_password=False)
    store = db.RatingsStore(url, preset)
    for read in (store.read_ratings, store.count_ratings, store.watermark):
        with pytest.raises(db.SchemaError) as error:
            read()
        message = str(error.value)
        assert f"table {table!r} does not exist" in message
        assert f"(schema preset {preset!r})" in message and store.safe_url() in message
        assert "secret" not in message  # the PostgreSQL password stays masked
    assert not sa.inspect(bare_engine).get_table_names()  # nothing was created
