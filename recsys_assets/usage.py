"""What the `recsys` commands share: bad user input, and opening the database.

Plain Python (no Dagster), so the light commands (`models`, `recommend`, data loads) and
`recsys run` use it alike.
"""

from __future__ import annotations

from recsys_assets.db import DatabaseUnusableError, RatingsStore, SchemaError
from recsys_assets.settings import Settings


class UsageError(Exception):
    """Bad input from the user: reported as one `error:` line and exit code 2."""


def db_error(exc: BaseException) -> str:
    """The driver's own message, one line, without SQLAlchemy's SQL echo and help link."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    return f"{type(orig).__name__}: {text}" if text else type(orig).__name__


def open_db(create: bool = False) -> RatingsStore:
    """The configured ratings database, checked: it exists and has the preset's ratings tables.

    `create`: create the tables this project owns when missing (native preset: ratings,
    movies) — for the embedded database and explicit loads (demo-data, import-movielens); the
    SQLite file itself only for the embedded database, never for RECSYS_DATABASE_URL.
    Otherwise a missing file, server or table is a UsageError naming it (URL masked) and the
    preset, and nothing is created or changed (as in a run started from the Dagster UI).
    """
    import sqlalchemy.exc

    try:
        settings = Settings.from_env()
        database = RatingsStore.from_env(settings)
    except ValueError as exc:  # an invalid RECSYS_* value, e.g. an unknown RECSYS_SCHEMA
        raise UsageError(str(exc)) from exc
    preset = database.preset.name
    where = f"{database.safe_url()} (schema preset {preset})"
    try:
        if settings.database_url_configured:
            database.engine()  # a configured SQLite file must exist: never created here
        if create:
            # Tables this project owns (user_predictions; native: also ratings, movies).
            database.ensure_schema()
        else:
            # The app's database: read as it is; user_predictions is created by its writer.
            database.check_ratings_tables()
    except SchemaError as exc:
        raise UsageError(str(exc)) from exc
    except DatabaseUnusableError as exc:  # missing, not a database, unwritable, no driver
        raise UsageError(f"{exc} (schema preset {preset})") from exc
    except sqlalchemy.exc.DBAPIError as exc:  # server down, wrong password, not a database
        raise UsageError(f"cannot use the ratings database {where}: {db_error(exc)}") from exc
    return database


def refuse_app_tables(database: RatingsStore, action: str) -> None:
    """The django preset reads the app's tables and never writes them (UsageError if asked)."""
    layout = database.preset.layout
    if layout is not None:
        raise UsageError(
            f"RECSYS_SCHEMA=django reads the Django app's tables in {database.safe_url()} "
            f"({layout.ratings_table}, {layout.movies_table}) and never writes them, so it "
            f"cannot {action}; ratings come from the app itself (use RECSYS_SCHEMA=native with "
            "the project's own database to load data)"
        )
