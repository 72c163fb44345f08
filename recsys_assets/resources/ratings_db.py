"""Dagster resource for the ratings database: its configuration, providing a `RatingsStore`.

All SQL lives in `recsys_assets.db`; this class only carries the connection settings (URL,
schema preset, the Django layout), shown and set in the UI and run config. Assets and sensors
declare `ratings_db: dg.ResourceParam[RatingsStore]` and receive the plain store
(`create_resource`), so a new query is written once, in `recsys_assets.db`.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field, field_validator, model_validator

from recsys_assets import db
from recsys_assets.db import RatingsStore
from recsys_assets.run_lock import TrainingLockBusy, claim_training_slot
from recsys_assets.settings import SCHEMA_PRESETS, Settings


class RatingsDatabase(dg.ConfigurableResource):
    """Where ratings are read from and top-N predictions are written to (provides a
    `RatingsStore`)."""

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

    def store(self) -> RatingsStore:
        """The plain store this configuration describes (what assets and sensors receive)."""
        # Presets can also arrive via run config, which may bypass the validator: re-checked
        # by `preset_of`.
        preset = db.preset_of(self.preset).with_layout(self.django_schema())
        return RatingsStore(self.url, preset)

    def create_resource(self, context: dg.InitResourceContext) -> RatingsStore:
        # In a training run, every step that reads or writes the database first makes sure
        # no other training started before this one (runs executed outside the run queue:
        # `dagster asset materialize`, `recsys run`); see run_lock.py.
        if context.run is not None and context.instance is not None:
            try:
                claim_training_slot(context.instance, context.run)
            except TrainingLockBusy as exc:
                raise dg.Failure(str(exc)) from exc
        # Dagster's documented way for a ConfigurableResource to hand user code another object.
        return self.store()
