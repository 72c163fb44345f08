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


def models_dir() -> Path:
    # The seed's `ml/models/surprise/<name>.pkl` layout, rooted at RECSYS_HOME.
    return recsys_home() / "models" / "surprise"


def io_manager_base() -> str:
    """Where asset values are pickled; any fsspec URL (s3://, gs://, file://) works."""
    return os.environ.get("RECSYS_IO_BASE") or str(recsys_home() / "storage")


def dagster_home() -> Path:
    """DAGSTER_HOME if set, else an embedded SQLite instance under RECSYS_HOME."""
    return Path(os.environ.get("DAGSTER_HOME") or recsys_home() / "dagster_home").resolve()
