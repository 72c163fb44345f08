"""The environment, read in one place: `Settings.from_env()` parses and validates every variable.

Everything has an embedded default (files under RECSYS_HOME) so a fresh clone runs without
setup. The definitions read the settings once when the code location loads and hand them to
the resources, executor, schedule and sensors; the CLI reads them once per command. An invalid
value is a `SettingsError` (a ValueError) naming the variable and the value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_PRESETS = ("native", "django")
EXECUTORS = ("multiprocess", "in_process", "celery")
# Read by Dagster itself (dg.EnvVar) when the definitions pass the value on, so that it never
# shows in the UI.
DATABASE_URL_ENV = "RECSYS_DATABASE_URL"
SIGNING_KEY_ENV = "RECSYS_MODEL_SIGNING_KEY"
CELERY_BROKER_ENV = "RECSYS_CELERY_BROKER_URL"
CELERY_BACKEND_ENV = "RECSYS_CELERY_BACKEND_URL"
# The `django` preset's layout: field -> (variable, the seed app's value); `db.DjangoSchema`
# names the variable when a value is not a usable table name.
DJANGO_SETTINGS = {
    "content_type": ("RECSYS_DJANGO_CONTENT_TYPE", "movies.movie"),
    "ratings_table": ("RECSYS_DJANGO_RATINGS_TABLE", "ratings_rating"),
    "movies_table": ("RECSYS_DJANGO_MOVIES_TABLE", "movies_movie"),
    "content_type_table": ("RECSYS_DJANGO_CONTENT_TYPE_TABLE", "django_content_type"),
}


class SettingsError(ValueError):
    """One or more environment variables hold unusable values (each one named)."""


class Settings(BaseModel):
    """Every environment variable the project reads, typed, with the README's defaults.

    Field aliases are the variable names. Secrets (URLs that may hold a password, the signing
    key) are kept out of `repr`.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    home: Path = Field(default=Path(".recsys"), alias="RECSYS_HOME")
    dagster_home_dir: Path | None = Field(default=None, alias="DAGSTER_HOME")
    database_url_value: str | None = Field(default=None, alias=DATABASE_URL_ENV, repr=False)
    schema_preset: Literal["native", "django"] = Field(default="native", alias="RECSYS_SCHEMA")
    # The `django` preset's layout (ignored by `native`); defaults are the seed app's.
    django_content_type: str = Field(
        default=DJANGO_SETTINGS["content_type"][1], alias=DJANGO_SETTINGS["content_type"][0]
    )
    django_ratings_table: str = Field(
        default=DJANGO_SETTINGS["ratings_table"][1], alias=DJANGO_SETTINGS["ratings_table"][0]
    )
    django_movies_table: str = Field(
        default=DJANGO_SETTINGS["movies_table"][1], alias=DJANGO_SETTINGS["movies_table"][0]
    )
    django_content_type_table: str = Field(
        default=DJANGO_SETTINGS["content_type_table"][1],
        alias=DJANGO_SETTINGS["content_type_table"][0],
    )
    io_base: str | None = Field(default=None, alias="RECSYS_IO_BASE")
    model_store: str | None = Field(default=None, alias="RECSYS_MODEL_STORE")
    signing_key: str | None = Field(default=None, alias=SIGNING_KEY_ENV, repr=False)
    timezone: str = Field(default="UTC", alias="RECSYS_TIMEZONE")
    sensor_interval_seconds: int = Field(default=60, ge=1, alias="RECSYS_SENSOR_INTERVAL_SECONDS")
    retrain_min_new_ratings: int = Field(default=1000, ge=1, alias="RECSYS_RETRAIN_MIN_NEW_RATINGS")
    retrain_min_new_fraction: float = Field(
        default=0.0, ge=0.0, alias="RECSYS_RETRAIN_MIN_NEW_FRACTION"
    )
    retrain_min_interval_seconds: int = Field(
        default=3600, ge=0, alias="RECSYS_RETRAIN_MIN_INTERVAL_SECONDS"
    )
    alert_webhook_url: str | None = Field(
        default=None, alias="RECSYS_ALERT_WEBHOOK_URL", repr=False
    )
    # What counts as a usable rating (`ratings_df`; its run config may override both).
    rating_scale: tuple[float, float] = Field(default=(0.5, 5.0), alias="RECSYS_RATING_SCALE")
    max_invalid_fraction: float = Field(
        default=0.05, ge=0.0, le=1.0, alias="RECSYS_MAX_INVALID_FRACTION"
    )
    db_max_retries: int = Field(default=3, ge=0, alias="RECSYS_DB_MAX_RETRIES")
    db_retry_delay_seconds: float = Field(
        default=5.0, ge=0.0, alias="RECSYS_DB_RETRY_DELAY_SECONDS"
    )
    # None: the caller's default (`multiprocess` for launched runs, `in_process` for `recsys run`).
    executor: Literal["multiprocess", "in_process", "celery"] | None = Field(
        default=None, alias="RECSYS_EXECUTOR"
    )
    celery_broker_url: str | None = Field(default=None, alias=CELERY_BROKER_ENV, repr=False)
    celery_backend_url: str | None = Field(default=None, alias=CELERY_BACKEND_ENV, repr=False)

    @field_validator(
        "django_content_type",
        "django_ratings_table",
        "django_movies_table",
        "django_content_type_table",
        "timezone",
        "schema_preset",
        "executor",
        mode="before",
    )
    @classmethod
    def _strip(cls, value: object) -> object:
        # Names, not secrets: surrounding blanks are a typo, never meant.
        return value.strip() if isinstance(value, str) else value

    @field_validator("rating_scale", mode="before")
    @classmethod
    def _min_max(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_rating_scale(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not a known IANA timezone (e.g. UTC, Europe/Berlin)") from None
        return name

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse `environ` (default `os.environ`); unset or empty variables take the default."""
        environ = os.environ if environ is None else environ
        names = {field.alias for field in cls.model_fields.values()}
        # Blank counts as unset; values are kept as given (a signing key may hold spaces).
        values = {k: environ[k] for k in names if k in environ and environ[k].strip()}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(_describe(exc, values)) from None

    # --- derived places ------------------------------------------------------------------

    @property
    def recsys_home(self) -> Path:
        """Root of everything the project writes: ratings DB, models, IO-manager storage."""
        return self.home.expanduser().resolve()

    @property
    def default_database_url(self) -> str:
        return f"sqlite:///{self.recsys_home / 'ratings.db'}"

    @property
    def database_url_configured(self) -> bool:
        """RECSYS_DATABASE_URL is set: a database the project must never create or fill."""
        return self.database_url_value is not None

    @property
    def database_url(self) -> str:
        return self.database_url_value or self.default_database_url

    @property
    def django_layout(self) -> dict[str, str]:
        """The `django` preset's table names and content type (validated by `db.DjangoSchema`)."""
        return {field: getattr(self, f"django_{field}") for field in DJANGO_SETTINGS}

    @property
    def models_dir(self) -> Path:
        # The seed's `ml/models/surprise/<name>.pkl` layout, rooted at RECSYS_HOME.
        return self.recsys_home / "models" / "surprise"

    @property
    def model_store_root(self) -> str:
        """Where model versions go: RECSYS_MODEL_STORE (a directory or any fsspec URL, e.g.
        s3://bucket/models), else `models_dir`."""
        return self.model_store or str(self.models_dir)

    @property
    def io_manager_base(self) -> str:
        """Where asset values are pickled; any fsspec URL (s3://, gs://, file://) works."""
        return self.io_base or str(self.recsys_home / "storage")

    @property
    def dagster_home(self) -> Path:
        """DAGSTER_HOME if set, else an embedded SQLite instance under RECSYS_HOME."""
        return (self.dagster_home_dir or self.recsys_home / "dagster_home").resolve()


def parse_rating_scale(text: str) -> tuple[float, float]:
    """'MIN,MAX' (e.g. '1,10') → (1.0, 10.0); ValueError unless two finite numbers, MIN < MAX."""
    parts = [p.strip() for p in text.split(",")]
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise ValueError("must be MIN,MAX, two numbers such as 1,10") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError("must be MIN,MAX with finite MIN < MAX, such as 1,10")
    return low, high


# pydantic's error types, said the way the rest of the project says them.
_MESSAGES = {
    "int_parsing": "is not a valid int",
    "int_from_float": "is not a valid int",
    "float_parsing": "is not a valid float",
    "greater_than_equal": "must be >= {ge}",
    "less_than_equal": "must be <= {le}",
    "literal_error": "is not one of {expected}",
}


def _describe(exc: ValidationError, values: Mapping[str, str]) -> str:
    """'RECSYS_X='raw' is not a valid int; ...': every bad variable with its value."""
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0])
        ctx = error.get("ctx") or {}
        if error["type"] == "value_error":
            reason = str(ctx.get("error", error["msg"]))
        elif error["type"] == "literal_error":
            reason = _MESSAGES["literal_error"].format(
                expected=ctx.get("expected", "").replace("'", "").replace(" or ", ", ")
            )
        else:
            reason = _MESSAGES.get(error["type"], error["msg"]).format(**ctx)
        problems.append(f"{name}={values.get(name)!r} {reason}")
    return "; ".join(problems)


def recsys_home() -> Path:
    """`Settings.from_env().recsys_home`, for plain-Python code that needs only the root
    (ml/svd_sgd.py's numba cache)."""
    return Settings.from_env().recsys_home
