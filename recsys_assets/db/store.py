"""`RatingsStore`: one database (URL + schema preset) with its queries as methods.

Plain Python: the CLI, serving and benchmarks use it directly; the Dagster resource
`resources.ratings_db.RatingsDatabase` only carries its configuration and provides one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import pandas as pd
from sqlalchemy.engine import Engine

from recsys_assets.db import changes, predictions, presets, ratings
from recsys_assets.db.changes import RatingsChanges, RatingsWatermark
from recsys_assets.db.engines import make_engine, safe_url
from recsys_assets.db.schema import DjangoSchema
from recsys_assets.settings import Settings


class RatingsStore:
    """Where ratings are read from and top-N predictions are written to.

    `preset`: "native", "django" (the seed app's layout), a `DjangoSchema` or a preset
    object. The engine is made on first use (one cached pool per URL and process), so a store
    can be built where the database is not reachable yet.
    """

    def __init__(self, url: str, preset: presets.Preset = "native") -> None:
        self.url = url
        self.preset = presets.preset_of(preset)

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> RatingsStore:
        """RECSYS_DATABASE_URL / RECSYS_SCHEMA / RECSYS_DJANGO_* (embedded SQLite under
        RECSYS_HOME and the native preset by default)."""
        settings = settings or Settings.from_env()
        layout = DjangoSchema(**settings.django_layout)
        preset = presets.preset_of(settings.schema_preset).with_layout(layout)
        return cls(settings.database_url, preset)

    def __repr__(self) -> str:
        return f"RatingsStore({self.safe_url()!r}, preset={self.preset.name!r})"

    def engine(self) -> Engine:
        """The cached SQLAlchemy Engine for `url` (MissingDatabaseError for a SQLite file that
        does not exist)."""
        return make_engine(self.url)

    def safe_url(self) -> str:
        """`url` with the password masked; use this, never `url`, in logs and messages."""
        return safe_url(self.url)

    # --- schema

    def ensure_schema(self) -> None:
        """Create the tables this project owns (and a SQLite file that does not exist yet):
        an explicit setup step, never done by reads."""
        presets.ensure_schema(make_engine(self.url, create=True), self.preset)

    def check_ratings_tables(self) -> None:
        """SchemaError naming the table, the masked URL and the preset if one is missing."""
        presets.check_ratings_tables(self.engine(), self.preset)

    @contextlib.contextmanager
    def _naming_missing_tables(self) -> Iterator[None]:
        """A query on the app's tables that fails because one is missing raises SchemaError
        naming it, the masked URL and the preset, instead of the driver's bare message."""
        try:
            yield
        except Exception:  # SQLAlchemy's errors, and the driver's own from raw-cursor reads
            self.check_ratings_tables()
            raise

    # --- ratings and movies

    def read_ratings(self, chunksize: int | None = None, reader: str = "adbc") -> pd.DataFrame:
        """`ratings.read_ratings` (`reader="tuples"`: the DB-API driver's tuples only)."""
        with self._naming_missing_tables():
            return ratings.read_ratings(self.engine(), self.preset, chunksize, reader)

    def count_ratings(self) -> int:
        with self._naming_missing_tables():
            return ratings.count_ratings(self.engine(), self.preset)

    def read_user_ratings(self, user_ids: Sequence[int]) -> pd.DataFrame:
        with self._naming_missing_tables():
            return ratings.read_user_ratings(self.engine(), self.preset, user_ids)

    def read_unrated_pairs(self, user_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """(user_id, movie_id) of active ratings without a value (never suggested to the user)."""
        with self._naming_missing_tables():
            return ratings.read_unrated_pairs(self.engine(), self.preset, user_ids)

    def movie_titles(self) -> dict[int, str]:
        return ratings.read_movie_titles(self.engine(), self.preset)

    def insert_movies(self, movies: pd.DataFrame) -> int:
        return ratings.insert_movies(self.engine(), self.preset, movies)

    def insert_ratings(self, frame: pd.DataFrame) -> int:
        return ratings.insert_ratings(self.engine(), self.preset, frame)

    def delete_ratings(self) -> int:
        return ratings.delete_ratings(self.engine(), self.preset)

    # --- change tracking (sensors)

    def watermark(self) -> RatingsWatermark:
        with self._naming_missing_tables():
            return changes.ratings_watermark(self.engine(), self.preset)

    def changes(self, after_id: int, upto_id: int) -> RatingsChanges:
        with self._naming_missing_tables():
            return changes.ratings_changes(self.engine(), self.preset, after_id, upto_id)

    # --- predictions

    def replace_predictions(
        self,
        frame: pd.DataFrame,
        model_version: str,
        users: Sequence[int] | None = None,
        created_at: int | None = None,
    ) -> int:
        # Created (or upgraded) here on first use: a database made by the app lacks it.
        predictions.ensure_predictions_table(self.engine(), self.preset.predictions)
        return predictions.replace_predictions(
            self.engine(), frame, model_version, created_at=created_at, users=users
        )

    def read_predictions(self, user_id: int | None = None) -> pd.DataFrame:
        return predictions.read_predictions(self.engine(), user_id=user_id)

    def prediction_versions(self, limit: int = 2) -> list[str]:
        return predictions.prediction_versions(self.engine(), limit=limit)
