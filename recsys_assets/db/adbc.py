"""The ratings read through ADBC (Arrow Database Connectivity): columns from the database as
Arrow batches, without a Python object per value (3-6x faster than driver tuples at 5M, see
docs/benchmarks.md).

ADBC opens its own connection from the engine's URL, read-only use, one transaction. It
reads what the statement selects only where the result means the same as the driver's tuples:
`arrow_batches` raises `AdbcRefused` for a URL it cannot take, a driver error, or a column
whose Arrow type would change the values (text in SQLite's untyped columns, NUMERIC, float4);
the caller then reads with the tuple reader, which decides those cases as it always has.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    import pyarrow as pa

# SQLite's busy timeout on every engine connection (engines._sqlite_pragmas), in ms.
_SQLITE_BUSY_MS = 30_000
# ADBC's PostgreSQL driver sizes batches in bytes of its COPY stream: a ratings row is about
# 62 bytes there (5 eight-byte fields, each with a 4-byte length, and a 2-byte field count).
_PG_ROW_BYTES = 64

_ID_COLUMNS = ("user_id", "movie_id", "rating_id")
# Text that is a number: in a column ADBC typed as text (SQLite infers the type from the
# values) a number in it arrives as its text, which would no longer read as unix seconds.
_NUMBER_TEXT = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


class AdbcRefused(Exception):
    """ADBC cannot do this read as the tuple reader would; the message says why."""


def adbc_uri(engine: Engine) -> tuple[str, str]:
    """(driver, URI) that ADBC connects with for `engine`'s database: "sqlite" and a
    `file:` URI that never creates the file, or "postgresql" and the libpq connection
    string psycopg2 is given (SQLAlchemy's own translation of the URL, query included).
    AdbcRefused for databases and URL forms ADBC cannot read as the engine does."""
    dialect = engine.dialect
    cargs, cparams = dialect.create_connect_args(engine.url)
    if dialect.name == "sqlite" and dialect.driver == "pysqlite":
        filename = cargs[0] if cargs else ":memory:"
        if filename == ":memory:" or filename == "" or cparams.get("uri"):
            raise AdbcRefused(
                "an in-memory or URI-named SQLite database (another connection would not "
                "open the same one)"
            )
        return "sqlite", "file:" + urllib.parse.quote(os.path.abspath(filename)) + "?mode=rw"
    if dialect.name == "postgresql" and dialect.driver == "psycopg2":
        if any(cargs):
            raise AdbcRefused("a PostgreSQL URL given as a DSN string")
        conninfo = " ".join(f"{key}={_conninfo_value(v)}" for key, v in cparams.items())
        return "postgresql", conninfo or "postgresql://"
    raise AdbcRefused(f"no ADBC reader for {dialect.name}+{dialect.driver}")


def _conninfo_value(value: Any) -> str:
    # libpq's keyword=value syntax: single-quoted, with \ and ' escaped by a backslash.
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def arrow_batches(engine: Engine, sql: str, fetch_rows: int) -> Iterator[pa.RecordBatch]:
    """Run `sql` (no parameters) through ADBC in one transaction and yield its Arrow batches
    (about `fetch_rows` rows each) as they arrive. AdbcRefused when ADBC cannot read it as the
    tuple reader would, before or during the read; the caller then discards what it got."""
    driver, uri = adbc_uri(engine)
    try:
        import adbc_driver_manager
        import pyarrow as pa

        if driver == "sqlite":
            import adbc_driver_sqlite.dbapi as dbapi
        else:
            import adbc_driver_postgresql.dbapi as dbapi
    except ImportError as exc:
        raise AdbcRefused(f"ADBC is not installed ({exc})") from exc
    if driver == "sqlite":
        _close_sqlite_connections(engine)
    failures = (adbc_driver_manager.Error, pa.ArrowException, OSError)
    password = str(engine.url.password or "")
    try:
        # DB-API connections of ADBC start a transaction: the read is one snapshot.
        with dbapi.connect(uri) as conn, conn.cursor() as cursor:
            if driver == "sqlite":
                cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
                options = {"adbc.sqlite.query.batch_rows": str(fetch_rows)}
            else:
                hint = fetch_rows * _PG_ROW_BYTES
                options = {"adbc.postgresql.batch_size_hint_bytes": str(hint)}
            cursor.adbc_statement.set_options(**options)
            cursor.execute(sql)
            for batch in cursor.fetch_record_batch():
                check_batch(batch)
                yield batch
    except failures as exc:
        # One line, without the statement PostgreSQL's messages repeat.
        text = " ".join(str(exc).split()).split(" Query was: ")[0][:300]
        if password:
            text = text.replace(password, "***")
        raise AdbcRefused(f"{type(exc).__name__}: {text}") from exc


def _close_sqlite_connections(engine: Engine) -> None:
    """Close the engine's connections to the SQLite file, or AdbcRefused if one is in use.

    ADBC's SQLite is another SQLite library than Python's sqlite3, and two must never have
    one file open in one process: POSIX locks belong to the process, so each library's
    closing drops the other's locks (sqlite.org/howtocorrupt.html, 2.2). Measured: with a
    pooled sqlite3 connection open, ADBC read the ratings as they were before a committed
    UPDATE. Taking turns is safe, as two processes are. The engine is the only one this
    process opens on the file (engines.make_engine, one per URL).
    """
    checkedout = getattr(engine.pool, "checkedout", None)
    if not callable(checkedout) or checkedout():
        raise AdbcRefused("this process has the SQLite file open in another connection")
    engine.dispose()


def check_batch(batch: pa.RecordBatch) -> None:
    """AdbcRefused if a column's Arrow type would give other values than the driver's tuples:
    ids must be integers, ratings integers or float64, timestamps numbers, timestamps or
    date text (no number in text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    types = pa.types
    for name in _ID_COLUMNS:
        if not types.is_integer(batch.schema.field(name).type):
            raise AdbcRefused(f"column {name} arrives as {batch.schema.field(name).type}")
    rating = batch.schema.field("rating").type
    if not (types.is_integer(rating) or types.is_float64(rating) or types.is_null(rating)):
        # float4 would widen to other doubles than the driver's; text and NUMERIC are the
        # tuple reader's to keep raw.
        raise AdbcRefused(f"column rating arrives as {rating}")
    stamp = batch.column("timestamp")
    kind = stamp.type
    if types.is_string(kind) or types.is_large_string(kind):
        if pc.any(pc.match_substring_regex(stamp, _NUMBER_TEXT)).as_py():
            raise AdbcRefused("column timestamp holds numbers among text")
    elif not (
        types.is_integer(kind)
        or types.is_float64(kind)
        or types.is_timestamp(kind)
        or types.is_null(kind)
    ):
        raise AdbcRefused(f"column timestamp arrives as {kind}")
