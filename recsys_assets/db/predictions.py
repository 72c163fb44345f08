"""`user_predictions`: the atomic swap of a new top-N set, reads, and in-place upgrades."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from recsys_assets.db import bulk
from recsys_assets.db.schema import PREDICTION_COLUMNS, native_user_predictions
from recsys_assets.db.values import check_columns, db_values, id_values, is_numeric, to_unix_seconds

# Users per `IN (...)` list: stays far below SQLite's bound-parameter limit.
IN_CHUNK = 500


def in_chunks(values: Sequence[int], size: int = IN_CHUNK) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def _is_plain_source(source: pd.Series) -> bool:
    """True when every `source` value is None or a short non-empty string (safe for COPY)."""
    for value in pd.unique(source):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        if not isinstance(value, str) or not 0 < len(value) <= 16:
            return False
    return True


def replace_predictions(
    engine: Engine,
    predictions: pd.DataFrame,
    model_version: str,
    created_at: int | dt.datetime | None = None,
    users: Sequence[int] | None = None,
    batch_size: int = bulk.BATCH_SIZE,
) -> int:
    """Atomically swap in a new set of top-N predictions; return rows written.

    predictions: [user_id, movie_id, rank, score] and optionally source. In one transaction,
    delete the previous rows — all of them when `users` is None, else only those users' rows —
    then bulk-insert the new ones. Any failure rolls back, so readers never see a half-written set.
    With `users`, every prediction row must belong to one of them (otherwise the same user
    could end up with two generations of predictions).
    """
    check_columns(predictions, ("user_id", "movie_id", "rank", "score"), "predictions")
    created = _utc_datetime(time.time() if created_at is None else created_at)
    user_list: list[int] | None = None
    if users is not None:
        user_list = sorted({int(u) for u in users})
        stray = set(pd.unique(predictions["user_id"].dropna())) - set(user_list)
        if stray:
            sample = sorted(int(u) for u in stray)[:5]
            raise ValueError(
                f"predictions contain users not listed in `users` (e.g. {sample}); "
                "pass users=None to replace the whole table"
            )
    table = native_user_predictions  # same definition in both presets
    numeric = (
        is_numeric(predictions[["user_id", "movie_id", "rank"]])
        and is_numeric(predictions[["score"]].rename(columns={"score": "rating"}))
        and ("source" not in predictions or _is_plain_source(predictions["source"]))
    )
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # One writer at a time (a full write and a refresh of the same users would collide
            # on the (user_id, rank) key); readers are not blocked.
            conn.exec_driver_sql(f"LOCK TABLE {table.name} IN SHARE ROW EXCLUSIVE MODE")
        if user_list is None:
            conn.execute(sa.delete(table))
        else:
            for chunk in in_chunks(user_list):
                conn.execute(sa.delete(table).where(table.c.user_id.in_(chunk)))
        # Readers see the old set until the commit; a failure anywhere rolls the delete back.
        if numeric:
            # numpy columns, converted a chunk at a time: COPY on PostgreSQL, executemany on
            # SQLite (the generated top-N: millions of rows).
            frame = pd.DataFrame(
                {name: predictions[name].to_numpy() for name in ("user_id", "movie_id", "rank")}
            ).astype(np.int64)
            frame["score"] = predictions["score"].to_numpy(np.float64)
            frame["source"] = (
                predictions["source"].to_numpy(object) if "source" in predictions else None
            )
            constants = {
                "model_version": str(model_version),
                "created_at": _bulk_timestamp(conn, table.c.created_at, created),
            }
            with bulk.indexes_rebuilt_if_empty(conn, table, len(frame)):
                return bulk.insert_frame(conn, table, frame, constants, chunk_rows=batch_size)
        # Anything else (object columns from callers) goes value by value through
        # SQLAlchemy's type checks, which reject what the columns cannot hold.
        n = len(predictions)
        columns = {
            "user_id": id_values(predictions["user_id"]),
            "movie_id": id_values(predictions["movie_id"]),
            "rank": id_values(predictions["rank"]),
            "score": db_values(predictions["score"]),
            "model_version": [str(model_version)] * n,
            "created_at": [created] * n,
            "source": db_values(predictions["source"]) if "source" in predictions else [None] * n,
        }
        return bulk.batched_insert(conn, table, columns, batch_size)


def ensure_predictions_table(engine: Engine, table: sa.Table = native_user_predictions) -> None:
    """Create `user_predictions` if missing, or upgrade an older shape, in place.

    The project's only table in an app's database: every writer (the training job's assets,
    the refresh op, the CLI) calls this before writing, so a database the app made works on
    the first run, whoever started it; the app's own tables are never touched. A few catalog
    queries per write (one per asset per run), safe against another process doing the same.
    """
    if not sa.inspect(engine).has_table(table.name):
        try:
            table.create(engine, checkfirst=True)
        except sa.exc.DBAPIError:
            # Another process created it between the check and the CREATE.
            if not sa.inspect(engine).has_table(table.name):
                raise
    upgrade_predictions(engine, table)


def _utc_datetime(value: float | dt.datetime) -> dt.datetime:
    """Unix seconds or a datetime (naive = UTC) → aware UTC datetime, whole seconds."""
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return stamp.astimezone(dt.UTC).replace(microsecond=0)
    return dt.datetime.fromtimestamp(int(value), tz=dt.UTC)


def _bulk_timestamp(conn: Connection, column: sa.Column, value: dt.datetime) -> Any:
    """`value` as the bulk paths send it: what SQLAlchemy's SQLite type would store (naive
    UTC text, Django's format), an ISO string with offset for COPY, else the datetime."""
    if conn.dialect.name == "sqlite":
        process = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        naive = value.astimezone(dt.UTC).replace(tzinfo=None)
        return process(naive) if process else naive
    if conn.dialect.name == "postgresql":
        return value.isoformat()
    return value


def read_predictions(engine: Engine, user_id: int | None = None) -> pd.DataFrame:
    """Stored predictions (optionally one user's), ordered by user_id then rank.

    `created_at` comes back as int64 unix seconds (UTC), whatever the backend's column type.
    """
    table = native_user_predictions
    stmt = sa.select(*(table.c[name] for name in PREDICTION_COLUMNS))
    if user_id is not None:
        stmt = stmt.where(table.c.user_id == int(user_id))
    stmt = stmt.order_by(table.c.user_id, table.c.rank)
    with engine.connect() as conn:
        frame = pd.read_sql(stmt, conn)
    dtypes = {
        "user_id": np.int64,
        "movie_id": np.int64,
        "rank": np.int64,
        "score": np.float64,
        "created_at": np.int64,
    }
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, object)) for c in PREDICTION_COLUMNS})
    frame["created_at"] = to_unix_seconds(frame["created_at"])
    return frame.astype(dtypes)


def prediction_versions(engine: Engine, limit: int = 2) -> list[str]:
    """Up to `limit` distinct `model_version`s the table holds ([] for an empty or missing
    table): one means every row is from that model; two, that the table is mixed."""
    table = native_user_predictions
    if not sa.inspect(engine).has_table(table.name):
        return []
    stmt = sa.select(table.c.model_version).distinct().limit(limit)
    with engine.connect() as conn:
        return [str(v) for v in conn.execute(stmt).scalars()]


def upgrade_predictions(engine: Engine, table: sa.Table) -> None:
    """Bring a `user_predictions` table of an older shape to the current one, in place.

    Older shapes: no `source` column; no primary key and `created_at` as integer unix
    seconds. Rows are kept (created_at converted to UTC timestamps). One transaction.
    """
    columns = {c["name"]: c for c in sa.inspect(engine).get_columns(table.name)}
    if "source" not in columns:
        column = table.c.source
        ddl = column.type.compile(dialect=engine.dialect)
        with engine.begin() as conn:
            # Fixed identifiers from the Table definition; nothing here comes from input.
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {ddl}")
    if not _old_shape(engine, table):
        return
    if engine.dialect.name == "postgresql":
        _upgrade_predictions_postgres(engine, table)
    else:
        _upgrade_predictions_by_copy(engine, table)


def _old_shape(bind: Engine | Connection, table: sa.Table) -> bool:
    columns = {c["name"]: c["type"] for c in sa.inspect(bind).get_columns(table.name)}
    return "id" not in columns or isinstance(columns["created_at"], sa.Integer)


def _upgrade_predictions_postgres(engine: Engine, table: sa.Table) -> None:
    # Real ALTERs: the table keeps its identity (grants, views of the app stay valid).
    name = table.name
    with engine.begin() as conn:
        # Another process (webserver, daemon, a run) may be upgrading it right now.
        conn.exec_driver_sql(f"LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE")
        if not _old_shape(conn, table):
            return
        conn.exec_driver_sql(
            f"ALTER TABLE {name} ALTER COLUMN created_at TYPE timestamp with time zone "
            "USING to_timestamp(created_at)"
        )
        conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN id BIGSERIAL PRIMARY KEY")
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS ix_{name}_user_id")
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _upgrade_predictions_by_copy(engine: Engine, table: sa.Table) -> None:
    # SQLite cannot add a primary key or change a column type: rename, create, copy, drop.
    legacy = f"{table.name}_before_pk"
    copied = list(PREDICTION_COLUMNS)  # the old shape has them all once `source` was added
    old = sa.table(legacy, *(sa.column(c) for c in copied))
    created = sa.func.datetime(old.c.created_at, "unixepoch")
    select = sa.select(*(created if c == "created_at" else old.c[c] for c in copied))
    with engine.connect() as conn:
        # pysqlite would autocommit the DDL; an explicit BEGIN makes the whole move atomic,
        # IMMEDIATE takes the write lock first, so a concurrent upgrade waits, then sees it done.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        if not _old_shape(conn, table):
            conn.rollback()
            return
        for index in sa.inspect(conn).get_indexes(table.name):
            conn.exec_driver_sql(f'DROP INDEX "{index["name"]}"')
        conn.exec_driver_sql(f"ALTER TABLE {table.name} RENAME TO {legacy}")
        table.create(conn)
        conn.execute(table.insert().from_select(copied, select))
        conn.exec_driver_sql(f"DROP TABLE {legacy}")
        conn.commit()
