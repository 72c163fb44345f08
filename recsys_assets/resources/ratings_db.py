"""Dagster resource for the ratings database: a thin, configurable wrapper over `recsys_assets.db`.

All SQL lives in `recsys_assets.db`; this class only carries the connection settings (URL and
schema preset) so assets, sensors and the CLI share one way to reach the database.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
import pandas as pd
from pydantic import Field, field_validator, model_validator
from sqlalchemy.engine import Engine

from recsys_assets import db
from recsys_assets.settings import SCHEMA_PRESETS, Settings


class RatingsDatabase(dg.ConfigurableResource):
    """Where ratings are read from and top-N predictions are written to."""

    url: str = Field(
        description="SQLAlchemy URL, e.g. sqlite:////path/ratings.db or "
        "postgresql+psycopg2://user:pass@host/db"
    )
    preset: str = Field(
        default="native",
        description=f"Table layout: one of {', '.join(SCHEMA_PRESETS)}",
    )

    # The django preset's layout (ignored by `native`); defaults are the seed app's.
    django_content_type: str = Field(
        default="movies.movie",
        description="Rated content type as 'app_label.model' (RECSYS_DJANGO_CONTENT_TYPE)",
    )
    django_ratings_table: str = Field(
        default="ratings_rating", description="Ratings table (RECSYS_DJANGO_RATINGS_TABLE)"
    )
    django_movies_table: str = Field(
        default="movies_movie", description="Titles table (RECSYS_DJANGO_MOVIES_TABLE)"
    )
    django_content_type_table: str = Field(
        default="django_content_type",
        description="Content types table (RECSYS_DJANGO_CONTENT_TYPE_TABLE)",
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        return db.check_preset(value)

    @model_validator(mode="after")
    def _valid_django_layout(self) -> RatingsDatabase:
        self.django_schema()  # raises ValueError naming the bad value
        return self

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> RatingsDatabase:
        """Build from RECSYS_DATABASE_URL / RECSYS_SCHEMA / RECSYS_DJANGO_* (embedded SQLite
        and the native preset by default), as parsed into `settings` (else read now)."""
        settings = settings or Settings.from_env()
        layout = {f"django_{k}": v for k, v in settings.django_layout.items()}
        return cls(url=settings.database_url, preset=settings.schema_preset, **layout)

    def django_schema(self) -> db.DjangoSchema:
        return db.DjangoSchema(
            content_type=self.django_content_type,
            ratings_table=self.django_ratings_table,
            movies_table=self.django_movies_table,
            content_type_table=self.django_content_type_table,
        )

    # Presets can also arrive via run config, which may bypass the validator: re-check here.
    def _preset(self) -> db.Preset:
        if db.check_preset(self.preset) == "native":
            return "native"
        return self.django_schema()

    def engine(self) -> Engine:
        """The cached SQLAlchemy Engine for `url` (one pool per process)."""
        return db.make_engine(self.url)

    def safe_url(self) -> str:
        """`url` with the password masked; use this, never `url`, in logs and messages."""
        return db.safe_url(self.url)

    def ensure_schema(self) -> None:
        """Create the tables this project owns (and a SQLite file that does not exist yet):
        an explicit setup step, never done by reads."""
        db.ensure_schema(db.make_engine(self.url, create=True), self._preset())

    def check_ratings_tables(self) -> None:
        """SchemaError naming the table, the masked URL and the preset if one is missing."""
        db.check_ratings_tables(self.engine(), self._preset())

    def read_ratings(self, chunksize: int | None = None) -> pd.DataFrame:
        return db.read_ratings(self.engine(), self._preset(), chunksize=chunksize)

    def count_ratings(self) -> int:
        return db.count_ratings(self.engine(), self._preset())

    def read_user_ratings(self, user_ids: Sequence[int]) -> pd.DataFrame:
        return db.read_user_ratings(self.engine(), self._preset(), user_ids)

    def read_unrated_pairs(self, user_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """(user_id, movie_id) of active ratings without a value (never suggested to the user)."""
        return db.read_unrated_pairs(self.engine(), self._preset(), user_ids)

    def watermark(self) -> db.RatingsWatermark:
        return db.ratings_watermark(self.engine(), self._preset())

    def changes(self, after_id: int, upto_id: int) -> db.RatingsChanges:
        return db.ratings_changes(self.engine(), self._preset(), after_id, upto_id)

    def movie_titles(self) -> dict[int, str]:
        return db.read_movie_titles(self.engine(), self._preset())

    def insert_movies(self, movies: pd.DataFrame) -> int:
        return db.insert_movies(self.engine(), self._preset(), movies)

    def insert_ratings(self, ratings: pd.DataFrame) -> int:
        return db.insert_ratings(self.engine(), self._preset(), ratings)

    def delete_ratings(self) -> int:
        return db.delete_ratings(self.engine(), self._preset())

    def replace_predictions(
        self,
        predictions: pd.DataFrame,
        model_version: str,
        users: Sequence[int] | None = None,
        created_at: int | None = None,
    ) -> int:
        return db.replace_predictions(
            self.engine(), predictions, model_version, created_at=created_at, users=users
        )

    def read_predictions(self, user_id: int | None = None) -> pd.DataFrame:
        return db.read_predictions(self.engine(), user_id=user_id)
