"""A database as the app made it, for the front-door tests: the app's tables, created and
filled with plain SQL (no project code, no `ensure_schema`), and checksums of those tables to
prove the project never changed them."""

from __future__ import annotations

import datetime as dt
import hashlib

import pandas as pd
import sqlalchemy as sa

# What a web app's migrations would have created (the seed app's layouts).
_DDL = {
    "native": [
        "CREATE TABLE movies (id INTEGER PRIMARY KEY, title TEXT)",
        "CREATE TABLE ratings (id {serial}, user_id BIGINT NOT NULL, movie_id BIGINT "
        "NOT NULL, rating FLOAT, active BOOLEAN NOT NULL, created_at BIGINT NOT NULL)",
    ],
    "django": [
        "CREATE TABLE django_content_type (id INTEGER PRIMARY KEY, app_label VARCHAR(100) "
        "NOT NULL, model VARCHAR(100) NOT NULL)",
        "CREATE TABLE movies_movie (id INTEGER PRIMARY KEY, title TEXT)",
        "CREATE TABLE ratings_rating (id {serial}, user_id BIGINT NOT NULL, value "
        "FLOAT, content_type_id INTEGER NOT NULL REFERENCES django_content_type (id), "
        "object_id BIGINT NOT NULL, active BOOLEAN NOT NULL, timestamp TIMESTAMP)",
        "INSERT INTO django_content_type VALUES (1, 'auth', 'user'), (2, 'movies', 'movie')",
    ],
}
APP_TABLES = {
    "native": ("movies", "ratings"),
    "django": ("django_content_type", "movies_movie", "ratings_rating"),
}


def make_app_database(url: str, preset: str, movies: pd.DataFrame, ratings: pd.DataFrame) -> None:
    """The app's tables in `url` (which must exist or be a SQLite file path), with data."""
    engine = sa.create_engine(url)
    # Rating ids come from the database, as when the app inserts them.
    serial = (
        "BIGSERIAL PRIMARY KEY" if engine.dialect.name == "postgresql" else "INTEGER PRIMARY KEY"
    )
    with engine.begin() as conn:
        for statement in _DDL[preset]:
            conn.exec_driver_sql(statement.replace("{serial}", serial))
        movie_table = "movies" if preset == "native" else "movies_movie"
        conn.execute(
            sa.text(f"INSERT INTO {movie_table} (id, title) VALUES (:id, :title)"),
            [
                {"id": int(i), "title": t}
                for i, t in zip(movies["id"], movies["title"], strict=True)
            ],
        )
        rows = zip(
            ratings["user_id"],
            ratings["movie_id"],
            ratings["rating"],
            ratings["timestamp"],
            strict=True,
        )
        if preset == "native":
            conn.execute(
                sa.text(
                    "INSERT INTO ratings (user_id, movie_id, rating, active, created_at) "
                    "VALUES (:u, :m, :r, TRUE, :t)"
                ),
                [{"u": int(u), "m": int(m), "r": float(r), "t": int(t)} for u, m, r, t in rows],
            )
        else:
            conn.execute(
                sa.text(
                    "INSERT INTO ratings_rating (user_id, value, content_type_id, object_id, "
                    "active, timestamp) VALUES (:u, :r, 2, :m, TRUE, :t)"
                ),
                [
                    {
                        "u": int(u),
                        "m": int(m),
                        "r": float(r),
                        "t": dt.datetime.fromtimestamp(int(t), dt.UTC).replace(tzinfo=None),
                    }
                    for u, m, r, t in rows
                ],
            )
    engine.dispose()


def app_checksums(url: str, preset: str) -> dict[str, str]:
    """SHA-256 of each app table's column names and rows (in id order)."""
    engine = sa.create_engine(url)
    out = {}
    with engine.connect() as conn:
        for table in APP_TABLES[preset]:
            result = conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id")
            digest = hashlib.sha256(repr(list(result.keys())).encode())
            for row in result:
                digest.update(repr(tuple(row)).encode())
            out[table] = digest.hexdigest()
    engine.dispose()
    return out


def prediction_rows(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = conn.exec_driver_sql("SELECT COUNT(*) FROM user_predictions").scalar_one()
    engine.dispose()
    return int(count)
