"""Environment-driven settings shared by the Dagster definitions and the `recsys` CLI.

Everything has an embedded default (files under RECSYS_HOME) so a fresh clone runs without setup.
"""

from __future__ import annotations

import os
from pathlib import Path

SCHEMA_PRESETS = ("native", "django")
# HMAC key for model manifests; read through dg.EnvVar in the definitions, never logged.
SIGNING_KEY_ENV = "RECSYS_MODEL_SIGNING_KEY"


def recsys_home() -> Path:
    """Root of everything the project writes: ratings DB, models, IO-manager storage."""
    return Path(os.environ.get("RECSYS_HOME", ".recsys")).expanduser().resolve()


def default_database_url() -> str:
    return f"sqlite:///{recsys_home() / 'ratings.db'}"


def database_url() -> str:
    return os.environ.get("RECSYS_DATABASE_URL") or default_database_url()


def schema_preset() -> str:
    preset = os.environ.get("RECSYS_SCHEMA", "native")
    if preset not in SCHEMA_PRESETS:
        raise ValueError(f"RECSYS_SCHEMA={preset!r} is not one of {', '.join(SCHEMA_PRESETS)}")
    return preset


# The `django` preset's layout: the env var, and the seed app's value as the default.
DJANGO_SETTINGS = {
    "content_type": ("RECSYS_DJANGO_CONTENT_TYPE", "movies.movie"),
    "ratings_table": ("RECSYS_DJANGO_RATINGS_TABLE", "ratings_rating"),
    "movies_table": ("RECSYS_DJANGO_MOVIES_TABLE", "movies_movie"),
    "content_type_table": ("RECSYS_DJANGO_CONTENT_TYPE_TABLE", "django_content_type"),
}


def django_layout() -> dict[str, str]:
    """The `django` preset's table names and rated content type from the environment
    (unset or empty → the seed app's); validated by `db.DjangoSchema`."""
    return {
        field: (os.environ.get(var) or "").strip() or default
        for field, (var, default) in DJANGO_SETTINGS.items()
    }


def models_dir() -> Path:
    # The seed's `ml/models/surprise/<name>.pkl` layout, rooted at RECSYS_HOME.
    return recsys_home() / "models" / "surprise"


def model_store_root() -> str:
    """Where model versions go: RECSYS_MODEL_STORE (a directory or any fsspec URL, e.g.
    s3://bucket/models), else `models_dir()`."""
    return os.environ.get("RECSYS_MODEL_STORE") or str(models_dir())


def io_manager_base() -> str:
    """Where asset values are pickled; any fsspec URL (s3://, gs://, file://) works."""
    return os.environ.get("RECSYS_IO_BASE") or str(recsys_home() / "storage")


def dagster_home() -> Path:
    """DAGSTER_HOME if set, else an embedded SQLite instance under RECSYS_HOME."""
    return Path(os.environ.get("DAGSTER_HOME") or recsys_home() / "dagster_home").resolve()


# --- automation (schedule, sensors, alerts) ------------------------------------------------


def _env_number(name: str, default: float, cast: type, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {cast.__name__}") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r} must be >= {minimum}")
    return value


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """Integer from the environment (unset or empty → `default`); bad values name the variable."""
    return int(_env_number(name, default, int, minimum))


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    return float(_env_number(name, default, float, minimum))


def timezone() -> str:
    """IANA timezone of the schedules (`RECSYS_TIMEZONE`, default UTC); checked on load."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = os.environ.get("RECSYS_TIMEZONE") or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"RECSYS_TIMEZONE={name!r} is not a known IANA timezone (e.g. UTC, Europe/Berlin)"
        ) from None
    return name


def sensor_interval_seconds() -> int:
    """How often the ratings sensors tick (`RECSYS_SENSOR_INTERVAL_SECONDS`, default 60)."""
    return env_int("RECSYS_SENSOR_INTERVAL_SECONDS", 60, minimum=1)


def alert_webhook_url() -> str | None:
    """Where the run failure sensor POSTs a JSON alert (`RECSYS_ALERT_WEBHOOK_URL`), if set."""
    return os.environ.get("RECSYS_ALERT_WEBHOOK_URL") or None


def db_retry_delay_seconds() -> float:
    """First retry delay after a transient DB error (`RECSYS_DB_RETRY_DELAY_SECONDS`, 5 s);
    later retries back off exponentially."""
    return env_float("RECSYS_DB_RETRY_DELAY_SECONDS", 5.0)


def db_max_retries() -> int:
    return env_int("RECSYS_DB_MAX_RETRIES", 3)
