"""Engines: one cached pool per URL, SQLite pragmas, fork safety and masked URLs."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine


class MissingDatabaseError(RuntimeError):
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
            engine = sa.create_engine(parsed)
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = sa.create_engine(parsed, pool_pre_ping=True)
        _engines[url] = engine
        return engine


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
