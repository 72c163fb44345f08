"""Schema presets as data: one object per table layout, holding its tables and ratings query.

* ``native`` — tables created and owned by this project (`movies`, `ratings`).
* ``django`` — the original Django app's tables (`ratings_rating` + `django_content_type` +
  `movies_movie`), read in place and never written by the pipeline. A `DjangoSchema` names
  other tables or another rated content type; the writes exist for tests and demos.

The queries (`ratings.py`, `changes.py`) read a preset's attributes and call its few methods
(create its tables, build rows to insert, delete ratings); none of them branches on its name.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from recsys_assets.db import schema
from recsys_assets.db.engines import safe_url
from recsys_assets.db.predictions import upgrade_predictions
from recsys_assets.db.schema import DEFAULT_DJANGO_SCHEMA, DjangoSchema, SchemaError
from recsys_assets.db.values import is_numeric
from recsys_assets.settings import SCHEMA_PRESETS


class RatingRows(NamedTuple):
    """Ratings to insert: ids and values as DBAPI-ready lists, timestamps as unix seconds."""

    user_ids: list[Any]
    movie_ids: list[Any]
    values: list[Any]
    seconds: pd.Series


class SchemaPreset:
    """A table layout. Attributes are the data the queries need:

    name: 'native' or 'django'. ratings / movies / predictions: its tables. ratings_query:
    SELECT of the active movie ratings as (user_id, movie_id, rating, timestamp, rating_id);
    rating_id: its row-id column (ordering, ranges). inactive_count: COUNT of its deactivated
    ratings. required: tables that must exist before ratings can be read. movies_optional:
    a missing movies table means "no titles" rather than an error. layout: the Django app's
    table names (None for the native preset, whose tables the project owns and may write).
    """

    name: str
    layout: DjangoSchema | None
    ratings: sa.Table
    movies: sa.Table
    predictions: sa.Table
    ratings_query: sa.Select
    rating_id: sa.ColumnElement[Any]
    inactive_count: sa.Select
    required: tuple[sa.Table, ...]
    movies_optional: bool

    def with_layout(self, layout: DjangoSchema) -> SchemaPreset:
        """This preset with the Django app's table names (only the django preset uses them)."""
        return self

    def create_tables(self, engine: Engine) -> None:
        """Create the tables this project owns in this layout (idempotent)."""
        raise NotImplementedError

    def bulk_ratings_frame(self, ratings: pd.DataFrame, seconds: pd.Series) -> pd.DataFrame | None:
        """Numpy-typed rows for the bulk path, or None when they must go value by value."""
        return None

    def rating_columns(self, conn: Connection, rows: RatingRows) -> dict[str, list[Any]]:
        """Parallel column lists for `batched_insert` into `ratings` (active rows)."""
        raise NotImplementedError

    def delete_ratings(self, conn: Connection) -> int:
        """Delete every movie rating; return how many."""
        raise NotImplementedError


class NativePreset(SchemaPreset):
    def __init__(self) -> None:
        r = schema.ratings
        self.name = "native"
        self.layout = None
        self.ratings, self.movies = r, schema.movies
        self.predictions = schema.native_user_predictions
        self.ratings_query = sa.select(
            r.c.user_id,
            r.c.movie_id,
            r.c.rating,
            r.c.created_at.label("timestamp"),
            r.c.id.label("rating_id"),
        ).where(r.c.active == sa.true())
        self.rating_id = r.c.id
        # Index-only: the partial index ix_ratings_inactive covers exactly these rows.
        inactive = r.c.active == sa.false()
        self.inactive_count = sa.select(sa.func.count()).select_from(r).where(inactive)
        self.required = (r, schema.movies)
        self.movies_optional = False

    def create_tables(self, engine: Engine) -> None:
        schema.native_metadata.create_all(engine, checkfirst=True)
        # create_all skips indexes of tables that already exist (databases made before it).
        schema.ratings_inactive_index.create(engine, checkfirst=True)

    def bulk_ratings_frame(self, ratings: pd.DataFrame, seconds: pd.Series) -> pd.DataFrame | None:
        if not is_numeric(ratings[["user_id", "movie_id", "rating"]]):
            return None
        return pd.DataFrame(
            {
                "user_id": ratings["user_id"].to_numpy(np.int64),
                "movie_id": ratings["movie_id"].to_numpy(np.int64),
                "rating": ratings["rating"].to_numpy(np.float64),
                "created_at": seconds.to_numpy(np.int64),
            }
        )

    def rating_columns(self, conn: Connection, rows: RatingRows) -> dict[str, list[Any]]:
        return {
            "user_id": rows.user_ids,
            "movie_id": rows.movie_ids,
            "rating": rows.values,
            "active": [True] * len(rows.user_ids),
            "created_at": rows.seconds.tolist(),
        }

    def delete_ratings(self, conn: Connection) -> int:
        deleted = conn.execute(sa.delete(self.ratings)).rowcount
        conn.execute(sa.delete(self.movies))
        return int(deleted)


class DjangoPreset(SchemaPreset):
    def __init__(self, layout: DjangoSchema = DEFAULT_DJANGO_SCHEMA) -> None:
        tables = schema.django_tables(layout)
        rr, ct = tables.ratings, tables.content_type
        self.name = "django"
        self.layout = layout
        self.content_type = ct
        self.ratings, self.movies, self.predictions = rr, tables.movies, tables.predictions
        self.content_type_id_query = sa.select(ct.c.id).where(
            ct.c.app_label == layout.app_label, ct.c.model == layout.model
        )
        self.ratings_query = (
            sa.select(
                rr.c.user_id,
                rr.c.object_id.label("movie_id"),
                rr.c.value.label("rating"),
                # Raw value: SQLite keeps DATETIME as text in whatever format the writer used,
                # and SQLAlchemy's own parser rejects some; to_unix_seconds parses them all.
                sa.type_coerce(rr.c.timestamp, sa.Text).label("timestamp"),
                rr.c.id.label("rating_id"),
            )
            .select_from(rr.join(ct, rr.c.content_type_id == ct.c.id))
            .where(
                ct.c.app_label == layout.app_label,
                ct.c.model == layout.model,
                rr.c.active == sa.true(),
                # Rows without a user or movie cannot be trained on and cannot be int64.
                rr.c.user_id.is_not(None),
                rr.c.object_id.is_not(None),
            )
        )
        self.rating_id = rr.c.id
        # Only the rated content type's: re-ratings of other content do not count.
        self.inactive_count = (
            sa.select(sa.func.count())
            .select_from(rr)
            .where(
                rr.c.active == sa.false(),
                rr.c.content_type_id == self.content_type_id_query.scalar_subquery(),
            )
        )
        self.required = (rr, ct)
        self.movies_optional = True

    def with_layout(self, layout: DjangoSchema) -> SchemaPreset:
        return _django_preset(layout)

    def create_tables(self, engine: Engine) -> None:
        # The app's tables must exist already; only user_predictions is ours.
        self._check_app_tables(engine)
        self.predictions.create(engine, checkfirst=True)

    def _check_app_tables(self, engine: Engine) -> None:
        inspector = sa.inspect(engine)
        where = safe_url(engine)
        for table in (self.ratings, self.content_type):
            if not inspector.has_table(table.name):
                raise SchemaError(
                    f"schema preset 'django' needs the existing table {table.name!r}, which is "
                    f"missing in {where}; run the Django migrations, set the table names "
                    "(RECSYS_DJANGO_RATINGS_TABLE, ...) or use RECSYS_SCHEMA=native"
                )
            have = {c["name"] for c in inspector.get_columns(table.name)}
            missing = [c.name for c in table.columns if c.name not in have]
            if missing:
                raise SchemaError(
                    f"table {table.name!r} in {where} lacks the columns {missing} the django "
                    f"preset reads (it has {sorted(have)}); is it the app's ratings table?"
                )
        ct = self.content_type
        with engine.connect() as conn:
            if conn.execute(self.content_type_id_query).first() is not None:
                return
            registered = [
                f"{a}.{m}" for a, m in conn.execute(sa.select(ct.c.app_label, ct.c.model).limit(50))
            ]
        # An empty content-type table is a database Django has not populated yet (tests); a
        # populated one without ours means the setting names the wrong model.
        if registered:
            raise SchemaError(
                f"content type {self.layout.content_type!r} is not registered in {ct.name!r} in "
                f"{where} (found: {', '.join(sorted(registered)[:20])}); set "
                "RECSYS_DJANGO_CONTENT_TYPE to the rated model as 'app_label.model'"
            )

    def content_type_id(self, conn: Connection, create: bool = False) -> int | None:
        ct_id = conn.execute(self.content_type_id_query).scalar()
        if ct_id is None and create:
            layout = self.layout
            conn.execute(
                self.content_type.insert().values(app_label=layout.app_label, model=layout.model)
            )
            ct_id = conn.execute(self.content_type_id_query).scalar_one()
        return ct_id

    def rating_columns(self, conn: Connection, rows: RatingRows) -> dict[str, list[Any]]:
        n = len(rows.user_ids)
        ct_id = self.content_type_id(conn, create=True)
        # Django's DateTimeField(auto_now_add) has no DB default, so we always send a value.
        stamps = pd.DatetimeIndex(pd.to_datetime(rows.seconds.to_numpy(), unit="s", utc=True))
        return {
            "user_id": rows.user_ids,
            "object_id": rows.movie_ids,
            "value": rows.values,
            "content_type_id": [ct_id] * n,
            "active": [True] * n,
            "timestamp": list(stamps.to_pydatetime()),
        }

    def delete_ratings(self, conn: Connection) -> int:
        # Only this content type's ratings; the movies table may be referenced by other tables.
        ct_id = self.content_type_id(conn)
        if ct_id is None:
            return 0
        stmt = sa.delete(self.ratings).where(self.ratings.c.content_type_id == ct_id)
        return int(conn.execute(stmt).rowcount)


NATIVE = NativePreset()

# A preset argument: "native", "django" (the seed's layout), a DjangoSchema or a preset object.
Preset = str | DjangoSchema | SchemaPreset


def check_preset(preset: Preset) -> str:
    """The preset's name ('native' or 'django'); ValueError listing the allowed values."""
    return preset_of(preset).name


def preset_of(preset: Preset) -> SchemaPreset:
    """The preset object for a preset argument; ValueError listing the allowed names."""
    if isinstance(preset, SchemaPreset):
        return preset
    if isinstance(preset, DjangoSchema):
        return _django_preset(preset)
    if preset not in _BY_NAME:
        raise ValueError(
            f"unknown schema preset {preset!r}; allowed values: {', '.join(SCHEMA_PRESETS)}"
        )
    return _BY_NAME[preset]


@functools.cache
def _django_preset(layout: DjangoSchema) -> DjangoPreset:
    return DjangoPreset(layout)


_BY_NAME: dict[str, SchemaPreset] = {
    "native": NATIVE,
    "django": _django_preset(DEFAULT_DJANGO_SCHEMA),
}
assert set(_BY_NAME) == set(SCHEMA_PRESETS)  # settings lists the names users may configure


def ensure_schema(engine: Engine, preset: Preset) -> None:
    """Create (or upgrade) the tables this project owns for `preset` (idempotent).

    native: movies, ratings, user_predictions. django: only user_predictions; the Django
    tables must already exist with the columns read here, and the rated content type must be
    registered, otherwise SchemaError names what is missing.
    """
    layout = preset_of(preset)
    layout.create_tables(engine)
    upgrade_predictions(engine, layout.predictions)


def check_ratings_tables(engine: Engine, preset: Preset) -> None:
    """Raise SchemaError naming the first table of `preset`'s ratings that is missing.

    Used where the project must read ratings but must not create their tables (a configured
    database: an empty table created there would only hide the wrong URL).
    """
    layout = preset_of(preset)
    inspector = sa.inspect(engine)
    for table in layout.required:
        if not inspector.has_table(table.name):
            raise SchemaError(
                f"table {table.name!r} does not exist in {safe_url(engine)} (schema preset "
                f"{layout.name!r}); check RECSYS_DATABASE_URL and RECSYS_SCHEMA"
            )


def create_django_tables(engine: Engine, layout: DjangoSchema = DEFAULT_DJANGO_SCHEMA) -> None:
    """Create the Django app's tables (tests and demos only; production reads them in place)."""
    tables = schema.django_tables(layout)
    tables.content_type.metadata.create_all(
        engine, tables=[tables.content_type, tables.ratings, tables.movies], checkfirst=True
    )
