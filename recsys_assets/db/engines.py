"""Engines: one cached pool per URL, SQLite pragmas, fork safety and masked URLs; errors that
name the database (URL masked) and what to change."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine


class DatabaseUnusableError(RuntimeError):
    """The configured database cannot be used as it is: its file is missing, not a database
    or not writable, or its driver is not installed. The message names the database (URL
    masked) and what to change; retrying cannot help."""


class MissingDatabaseError(DatabaseUnusableError):
    """A SQLite URL names a file that does not exist (never created unless asked to)."""


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the webserver read while a run writes; busy_timeout waits out short write locks.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other backends and in-memory databases)."""
    parsed = sa.make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        return None  # a URI filename: its own mode= decides whether it may be created
    return Path(database).expanduser()


def make_engine(url: str, create: bool = False) -> Engine:
    """Return the process-wide Engine for `url`, creating (and caching) it on first use.

    SQLite: a database file that does not exist is an error (MissingDatabaseError naming it),
    so a typo in a URL never creates an empty database; `create=True` (the embedded default
    database, explicit setup commands) creates its directory instead. WAL/busy-timeout
    pragmas are applied to every connection. Other backends get `pool_pre_ping` so
    connections dropped by the server between daily runs are replaced transparently.
    """
    with _engines_lock:
        engine = _engines.get(url)
        if engine is not None:
            return engine
        parsed = sa.make_url(url)
        if parsed.get_backend_name() == "sqlite":
            path = sqlite_file(url)
            if path is not None and not path.exists():
                if not create:
                    raise MissingDatabaseError(
                        f"SQLite database file {path} does not exist ({safe_url(url)}); "
                        "check RECSYS_DATABASE_URL, or load ratings first (`recsys "
                        "import-movielens PATH`, `recsys demo-data`)"
                    )
                path.parent.mkdir(parents=True, exist_ok=True)
            engine = _create_engine(url, parsed)
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            sa.event.listen(engine, "handle_error", _name_the_sqlite_file)
        else:
            engine = _create_engine(url, parsed, pool_pre_ping=True)
        _one_line_pool_errors(engine)
        _engines[url] = engine
        return engine


# The drivers this project installs and tests, as a URL names them.
_INSTALLED_DRIVERS = (
    "postgresql+psycopg2://USER:PASSWORD@HOST/DB for PostgreSQL, sqlite:///PATH for SQLite"
)


def _create_engine(url: str, parsed: sa.URL, **options: Any) -> Engine:
    """`sa.create_engine`, with a missing driver or dialect named by the URL (masked)."""
    try:
        return sa.create_engine(parsed, **options)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        what = "driver" if isinstance(exc, ImportError) else "SQLAlchemy dialect"
        raise DatabaseUnusableError(
            f"cannot use the database {safe_url(url)}: its {what} is not installed "
            f"({type(exc).__name__}: {exc}); install it into this environment, or name an "
            f"installed driver in RECSYS_DATABASE_URL: {_INSTALLED_DRIVERS}"
        ) from exc


# SQLite errors about the file itself (not the query, not a lock wait): what to check.
_SQLITE_FILE_PROBLEMS = {
    "file is not a database": "is not a SQLite database; RECSYS_DATABASE_URL must name a "
    "SQLite database file (or a PostgreSQL database)",
    "unable to open database file": "cannot be opened; it and its directory must exist and be "
    "readable and writable by this user (SQLite's WAL journal creates {name}-wal and "
    "{name}-shm beside it)",
    "attempt to write a readonly database": "is read-only; it and its directory must be "
    "writable by this user",
}


def _name_the_sqlite_file(context: Any) -> BaseException | None:
    """`handle_error` hook: a SQLite error about the database file itself becomes a
    DatabaseUnusableError naming the file and what to check; other errors pass unchanged."""
    orig = context.original_exception
    if not isinstance(orig, sqlite3.DatabaseError):
        return None
    message = str(orig)
    problem = _SQLITE_FILE_PROBLEMS.get(message.lower())
    if problem is None:
        return None
    engine = context.engine or getattr(context.connection, "engine", None)
    url = str(engine.url) if engine is not None else ""
    path = sqlite_file(url) if url else None
    name = str(path) if path is not None else "the database file"
    return DatabaseUnusableError(
        f"cannot use the database {safe_url(url) if url else 'sqlite'}: {name} "
        f"{problem.format(name=name)} ({message})"
    )


class _OneLine(logging.Filter):
    """Log records with a traceback (the pool's "Exception during reset or similar" when a
    connection died under it) as one line naming the error; the traceback only at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            exc = record.exc_info[1]
            text = " ".join(str(exc).split()) or type(exc).__name__
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {text}"
            record.args = None
            if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
                record.exc_info = None
        return True


_ONE_LINE = _OneLine()


def _one_line_pool_errors(engine: Engine) -> None:
    # The pool logs through its class's logger (or a per-pool one with echo_pool).
    logger = engine.pool.logger
    logger = getattr(logger, "logger", logger)
    if _ONE_LINE not in logger.filters:
        logger.addFilter(_ONE_LINE)


def _after_fork_in_child() -> None:
    # A forked child must not reuse the parent's pooled connections (SQLAlchemy's documented
    # pattern): drop them from the pool without closing the parent's sockets.
    for engine in _engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


def dispose_engines() -> None:
    """Close every cached engine's pool and forget them (tests, forked workers)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


# Query parameters that carry secrets (libpq's `?password=`, `sslpassword=`, ...).
_SECRET_QUERY_KEYS = ("password", "sslpassword", "passwd", "pwd", "secret", "token")


def safe_url(engine_or_url: Engine | str) -> str:
    """The URL with its password masked: the only form that may be printed or logged.

    Masks the password in the authority part and in query parameters (`?password=`).
    """
    try:
        url = engine_or_url.url if isinstance(engine_or_url, Engine) else sa.make_url(engine_or_url)
    except sa.exc.ArgumentError:
        return "<unparseable database URL>"  # never echo a string that may hold a password
    # A placeholder that survives URL quoting, swapped for *** once rendered.
    secret = {k: "MASKED" for k in url.query if k.lower() in _SECRET_QUERY_KEYS}
    text = url.update_query_dict(secret).render_as_string(hide_password=True)
    for key in secret:
        text = text.replace(f"{key}=MASKED", f"{key}=***")
    return text
