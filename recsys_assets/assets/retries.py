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
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "unable to open", "busy")


def is_transient_db_error(exc: BaseException) -> bool:
    """True for errors worth retrying: lost/refused connections, timeouts, SQLite lock waits."""
    # A disconnect surfaces as DBAPIError with connection_invalidated on some drivers.
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, TRANSIENT_DB_ERRORS):
        return False
    orig = getattr(exc, "orig", None)
    if isinstance(orig, sqlite3.Error):
        return any(marker in str(orig).lower() for marker in _SQLITE_TRANSIENT)
    return True


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
    except Exception as exc:
        if is_transient_db_error(exc):
            context.log.warning(
                "transient database error (attempt %d): %s",
                context.retry_number + 1,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            raise
        raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc
