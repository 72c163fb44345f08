"""Step retries for the database-touching steps: only transient database errors are retried.

Those steps carry `db_retry_policy()` (exponential backoff, visible in the UI) and run their
body inside `retry_only_transient_db_errors()`. That context manager lets connection-level
errors (server restarting, network blip, lock/serialization timeouts) reach the retry policy
and turns everything else into a `Failure(allow_retries=False)`: bad data or a missing model
fails at once with its message instead of being retried three times.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import sqlalchemy.exc

from recsys_assets.db import DatabaseUnusableError
from recsys_assets.settings import Settings

# Errors the database driver raises when the server or the network, not the query, failed.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)


def db_retry_policy(settings: Settings | None = None) -> dg.RetryPolicy:
    """Retries with exponential backoff and jitter (RECSYS_DB_MAX_RETRIES, ..._DELAY_SECONDS).

    Called where the asset and op modules are imported: a retry policy is part of an asset's
    definition, so this reads the settings then rather than when the definitions are built.
    """
    settings = settings or Settings.from_env()
    return dg.RetryPolicy(
        max_retries=settings.db_max_retries,
        delay=settings.db_retry_delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


# SQLite reports syntax errors and missing tables as OperationalError too; only these pass.
# ("unable to open database file" is a path or permission problem: not retried, see
# db.engines.DatabaseUnusableError.)
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "busy")
# PEP 249 names every driver's connection-level error classes alike (psycopg2, MySQLdb, ...):
# raised bare where code uses the driver's cursor directly (server-side cursors, COPY).
_DBAPI_TRANSIENT_NAMES = frozenset({"OperationalError", "InterfaceError"})


def _is_transient_driver_error(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return isinstance(exc, sqlite3.OperationalError) and any(
            marker in str(exc).lower() for marker in _SQLITE_TRANSIENT
        )
    if type(exc).__module__.startswith("sqlalchemy"):
        return False
    return any(cls.__name__ in _DBAPI_TRANSIENT_NAMES for cls in type(exc).__mro__)


def is_transient_db_error(exc: BaseException) -> bool:
    """True for errors worth retrying: lost/refused connections, timeouts, SQLite lock waits,
    whether SQLAlchemy wrapped the driver's error or it arrived bare."""
    # A disconnect surfaces as DBAPIError with connection_invalidated on some drivers.
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, TRANSIENT_DB_ERRORS):
        orig = getattr(exc, "orig", None)
        return not isinstance(orig, sqlite3.Error) or _is_transient_driver_error(orig)
    return _is_transient_driver_error(exc)


@contextmanager
def retry_only_transient_db_errors(context: dg.OpExecutionContext) -> Iterator[None]:
    """Pass transient DB errors to the step's RetryPolicy; make every other error final."""
    try:
        yield
    except dg.Failure as failure:
        if not failure.allow_retries:
            raise
        raise dg.Failure(
            description=failure.description, metadata=failure.metadata, allow_retries=False
        ) from failure
    except DatabaseUnusableError as exc:
        # Its message names the database, quotes the driver and says what to change. The
        # driver's error under it would be shown instead by whatever reports a failure's
        # innermost cause (the `recsys run` summary, the failure sensor): cut it off.
        exc.__cause__ = None
        exc.__suppress_context__ = True
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    except Exception as exc:
        if is_transient_db_error(exc):
            context.log.warning(
                "transient database error (attempt %d): %s",
                context.retry_number + 1,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            raise
        raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc
