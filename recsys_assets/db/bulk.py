"""Bulk writes: batched executemany, COPY on PostgreSQL, index rebuilds around big loads.

The one way this package writes many rows: `insert_frame` for numpy-typed frames (COPY on
PostgreSQL, the compiled INSERT with plain tuples on SQLite), `batched_insert` for values that
need SQLAlchemy's per-value type checks.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recsys_assets.db.values import db_values

# Rows per executemany call: big enough to amortise round trips, small enough to bound memory.
BATCH_SIZE = 50_000
# Rows per chunk in the bulk paths (COPY / executemany): the per-row Python objects alive.
BULK_ROWS = 200_000
# Loads at least this big into an empty table drop and rebuild its secondary indexes.
REINDEX_MIN_ROWS = 100_000


def batched_insert(
    conn: Connection, table: sa.Table, columns: dict[str, list[Any]], batch_size: int
) -> int:
    """executemany `table.insert()` over parallel column lists, `batch_size` rows at a time."""
    names = list(columns)
    rows = len(next(iter(columns.values()))) if columns else 0
    if conn.dialect.name == "sqlite":
        return _sqlite_batched_insert(conn, table, columns, batch_size)
    stmt = table.insert()
    for start in range(0, rows, batch_size):
        stop = start + batch_size
        chunk = zip(*(columns[n][start:stop] for n in names), strict=True)
        # psycopg2: SQLAlchemy turns this into multi-row VALUES pages (insertmanyvalues).
        conn.execute(stmt, [dict(zip(names, row, strict=True)) for row in chunk])
    return rows


def _sqlite_batched_insert(
    conn: Connection, table: sa.Table, columns: dict[str, list[Any]], batch_size: int
) -> int:
    """SQLite fast path: the compiled Core INSERT, executed with plain tuples.

    Core's per-row parameter handling costs about 3x sqlite3's own executemany, so the type
    bind processors (float coercion, bool → int, datetime → text) are applied column-wise
    here instead; values the types reject still fail the statement, as with Core.
    """
    dialect = conn.dialect
    compiled = table.insert().compile(dialect=dialect, column_keys=list(columns))
    order = list(compiled.positiontup or ())
    if sorted(order) != sorted(columns):  # pragma: no cover - guards a SQLAlchemy change
        raise RuntimeError(f"unexpected INSERT parameters {order} for {list(columns)}")
    processors = {
        name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in order
    }
    sql = str(compiled)
    rows = len(columns[order[0]]) if order else 0
    for start in range(0, rows, batch_size):
        stop = start + batch_size
        batch = []
        for name in order:
            values = columns[name][start:stop]
            proc = processors[name]
            if proc is not None:
                try:
                    values = [None if v is None else proc(v) for v in values]
                except (TypeError, ValueError) as exc:
                    raise sa.exc.StatementError(
                        f"invalid value for {table.name}.{name}: {exc}", sql, None, exc
                    ) from exc
            batch.append(values)
        conn.exec_driver_sql(sql, list(zip(*batch, strict=True)))
    return rows


# --- bulk paths: COPY on PostgreSQL, chunked executemany elsewhere ---------------------------


def _chunk_values(series: pd.Series, dialect: str) -> list[Any]:
    if dialect == "sqlite" and series.dtype == np.bool_:
        return series.to_numpy(np.int8).tolist()  # what SQLAlchemy's Boolean would send
    return db_values(series)


def _copy_chunk(conn: Connection, table: sa.Table, chunk: pd.DataFrame) -> None:
    """`COPY table (columns) FROM STDIN` in CSV: PostgreSQL's bulk path, no per-row statements.

    Table and column names come from the `Table` object, quoted by the dialect. Runs on the
    connection of the current transaction, so it commits or rolls back with it.
    """
    prep = conn.dialect.identifier_preparer
    columns = ", ".join(prep.quote(table.c[name].name) for name in chunk.columns)
    sql = f"COPY {prep.format_table(table)} ({columns}) FROM STDIN WITH (FORMAT csv)"
    buf = io.StringIO()
    # NaN -> empty unquoted field -> NULL; floats are written with round-trip precision.
    chunk.to_csv(buf, header=False, index=False, na_rep="")
    buf.seek(0)
    dbapi = conn.dialect.loaded_dbapi
    try:
        with conn.connection.dbapi_connection.cursor() as cursor:
            cursor.copy_expert(sql, buf)
    except dbapi.Error as exc:
        # The raw cursor bypasses SQLAlchemy: wrap like it would (IntegrityError, ...).
        raise sa.exc.DBAPIError.instance(sql, None, exc, dbapi.Error) from exc


def insert_frame(
    conn: Connection,
    table: sa.Table,
    frame: pd.DataFrame,
    constants: dict[str, Any] | None = None,
    chunk_rows: int | None = None,
) -> int:
    """Insert `frame` (columns named like `table`'s) plus `constants` columns, chunk by chunk.

    Python objects exist for one chunk at a time. PostgreSQL: COPY per chunk. SQLite: the
    compiled INSERT executemany'd with plain tuples (values are already what the types' bind
    processors would send). Other backends: SQLAlchemy's executemany.
    """
    chunk_rows = chunk_rows or BULK_ROWS  # read here, so tests can shrink it
    dialect = conn.dialect.name
    names = [*frame.columns, *(constants or {})]
    if dialect == "sqlite":
        compiled = table.insert().compile(dialect=conn.dialect, column_keys=names)
        order = list(compiled.positiontup or ())
        sql = str(compiled)
    for start in range(0, len(frame), chunk_rows):
        chunk = frame.iloc[start : start + chunk_rows]
        if constants:
            chunk = chunk.assign(**constants)
        if dialect == "postgresql":
            _copy_chunk(conn, table, chunk)
        elif dialect == "sqlite":
            columns = [_chunk_values(chunk[name], dialect) for name in order]
            conn.exec_driver_sql(sql, list(zip(*columns, strict=True)))
        else:
            columns = {name: db_values(chunk[name]) for name in names}
            batched_insert(conn, table, columns, BATCH_SIZE)
    return len(frame)


@contextlib.contextmanager
def indexes_rebuilt_if_empty(conn: Connection, table: sa.Table, rows: int) -> Iterator[None]:
    """Drop `table`'s secondary indexes around a big load into an empty table, then rebuild.

    Building an index once from sorted data is several times cheaper than updating it row by
    row (SQLite, 1M ratings: 15 s -> 7 s). Same transaction, so a failure restores them.
    """
    empty = conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is None
    rebuild = empty and rows >= REINDEX_MIN_ROWS
    if rebuild:
        for index in table.indexes:
            index.drop(conn)
    yield
    if rebuild:
        for index in table.indexes:
            index.create(conn)
