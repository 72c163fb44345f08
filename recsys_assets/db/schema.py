"""Table definitions: the project's own tables and the Django app's, plus its layout.

Table and column names come only from these `Table` objects; a `DjangoSchema` is validated on
construction, so no identifier is ever built from an unchecked caller-supplied string.
`user_predictions` has one definition, written to in both presets.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import NamedTuple

import sqlalchemy as sa

from recsys_assets.settings import DJANGO_SETTINGS

MOVIE_CT_APP_LABEL = "movies"
MOVIE_CT_MODEL = "movie"
PREDICTIONS_TABLE = "user_predictions"

RATINGS_COLUMNS = ("user_id", "movie_id", "rating", "timestamp", "rating_id")
PREDICTION_COLUMNS = (
    "user_id",
    "movie_id",
    "rank",
    "score",
    "model_version",
    "created_at",
    "source",
)

# SQLite only auto-increments an `INTEGER PRIMARY KEY` (the rowid alias), not `BIGINT`.
_BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class SchemaError(RuntimeError):
    """The database lacks a table this project needs and must not create itself."""


def _user_predictions_table(metadata: sa.MetaData) -> sa.Table:
    # Identical in both presets; each preset's MetaData gets its own copy. A single-column
    # primary key so an unmanaged Django model maps it on any Django version (README).
    return sa.Table(
        PREDICTIONS_TABLE,
        metadata,
        sa.Column("id", _BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        # The app's movie id (joinable to its movies table; no FK, so the app can delete movies).
        sa.Column("movie_id", sa.BigInteger, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        # UTC; timestamptz on PostgreSQL, Django's DATETIME text format on SQLite.
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # How the list was ranked: 'svd' (the model's blend) or 'popular' (cold-start users).
        sa.Column("source", sa.String(16), nullable=True),
        # One row per (user, rank); also serves the per-user lookups.
        sa.Index("ux_user_predictions_user_rank", "user_id", "rank", unique=True),
    )


# --- native preset -------------------------------------------------------------------------

native_metadata = sa.MetaData()

movies = sa.Table(
    "movies",
    native_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("title", sa.Text),
)

ratings = sa.Table(
    "ratings",
    native_metadata,
    sa.Column("id", _BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("movie_id", sa.BigInteger, nullable=False),
    sa.Column("rating", sa.Float, nullable=True),
    sa.Column("active", sa.Boolean, nullable=False, default=True, server_default=sa.true()),
    sa.Column("created_at", sa.BigInteger, nullable=False),  # unix seconds
    sa.Index("ix_ratings_user_id", "user_id"),
    sa.Index("ix_ratings_created_at", "created_at"),
)

# Partial index over the (few) inactive rows: keeps the sensors' count of deactivated ratings
# an index-only lookup instead of a table scan.
ratings_inactive_index = sa.Index(
    "ix_ratings_inactive",
    ratings.c.id,
    sqlite_where=ratings.c.active == sa.false(),
    postgresql_where=ratings.c.active == sa.false(),
)

native_user_predictions = _user_predictions_table(native_metadata)

# --- django preset -------------------------------------------------------------------------
# Only the columns this project reads; a real Django table has more.

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class DjangoSchema:
    """Where the Django app keeps its ratings: table names and the rated content type.

    Defaults are the seed app's (`ratings.Rating` with a GenericForeignKey to `movies.Movie`).
    Validated on construction, so a bad value fails with a message naming it.
    """

    content_type: str = f"{MOVIE_CT_APP_LABEL}.{MOVIE_CT_MODEL}"  # app_label.model
    ratings_table: str = "ratings_rating"
    movies_table: str = "movies_movie"
    content_type_table: str = "django_content_type"

    def __post_init__(self) -> None:
        parts = self.content_type.split(".")
        if len(parts) != 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ValueError(
                f"Django content type {self.content_type!r} (RECSYS_DJANGO_CONTENT_TYPE) must be "
                "'app_label.model', e.g. 'movies.movie'"
            )
        if parts[1] != parts[1].lower():
            raise ValueError(
                f"Django content type {self.content_type!r} (RECSYS_DJANGO_CONTENT_TYPE): Django "
                f"stores the model name in lower case ({parts[0]}.{parts[1].lower()})"
            )
        for field in ("ratings_table", "movies_table", "content_type_table"):
            name = getattr(self, field)
            if not _IDENTIFIER.match(name):
                raise ValueError(
                    f"Django {field.replace('_', ' ')} {name!r} ({DJANGO_SETTINGS[field][0]}) is "
                    "not a plain SQL table name (letters, digits and _; at most 63 characters)"
                )
        names = [self.ratings_table, self.movies_table, self.content_type_table]
        if PREDICTIONS_TABLE in names or len(set(names)) != len(names):
            raise ValueError(
                f"Django table names must differ from each other and from {PREDICTIONS_TABLE!r}: "
                f"{names}"
            )

    @property
    def app_label(self) -> str:
        return self.content_type.split(".")[0]

    @property
    def model(self) -> str:
        return self.content_type.split(".")[1]


DEFAULT_DJANGO_SCHEMA = DjangoSchema()


class _DjangoTables(NamedTuple):
    content_type: sa.Table
    ratings: sa.Table
    movies: sa.Table
    predictions: sa.Table


def _build_django_tables(schema: DjangoSchema) -> _DjangoTables:
    metadata = sa.MetaData()
    content_type = sa.Table(
        schema.content_type_table,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("app_label", sa.String(100), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.UniqueConstraint("app_label", "model"),
    )
    ratings_table = sa.Table(
        schema.ratings_table,
        metadata,
        sa.Column("id", _BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column(
            "content_type_id",
            sa.Integer,
            sa.ForeignKey(f"{schema.content_type_table}.id"),
            nullable=False,
        ),
        sa.Column("object_id", sa.BigInteger, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, default=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=True),
        sa.Index(f"ix_{schema.ratings_table}_content_type_id", "content_type_id"),
        sa.Index(f"ix_{schema.ratings_table}_user_id", "user_id"),
    )
    movies_table = sa.Table(
        schema.movies_table,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("title", sa.Text),
    )
    return _DjangoTables(
        content_type, ratings_table, movies_table, _user_predictions_table(metadata)
    )


@functools.cache
def django_tables(schema: DjangoSchema = DEFAULT_DJANGO_SCHEMA) -> _DjangoTables:
    """The `Table` objects of one Django layout (cached: one MetaData per layout)."""
    return _build_django_tables(schema)


django_content_type, ratings_rating, movies_movie, django_user_predictions = django_tables()
django_metadata = django_content_type.metadata
