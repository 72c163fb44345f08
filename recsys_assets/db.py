"""The ratings database: every SQL statement the project runs lives in this module.

Written with SQLAlchemy Core so the same code runs on SQLite (the embedded default) and
PostgreSQL. Table and column names come only from the `Table` objects below; the schema preset
that picks between them is checked against `settings.SCHEMA_PRESETS`, so no identifier is ever
built from a caller-supplied string.

Two presets:

* ``native`` — tables created and owned by this project (`movies`, `ratings`).
* ``django`` — the original Django app's tables (`ratings_rating` + `django_content_type` +
  `movies_movie`), read in place and never written by the pipeline. A `DjangoSchema` passed
  instead of the string names other tables or another rated content type.
  `create_django_tables` and the django branches of the insert/delete helpers exist for tests.

Both presets share `user_predictions`, which the project always creates itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from recsys_assets.settings import DJANGO_SETTINGS, SCHEMA_PRESETS

# Rows per executemany call: big enough to amortise round trips, small enough to bound memory.
BATCH_SIZE = 50_000
# Rows per chunk in the bulk paths (COPY / executemany): the per-row Python objects alive.
BULK_ROWS = 200_000
# Loads at least this big into an empty table drop and rebuild its secondary indexes.
REINDEX_MIN_ROWS = 100_000
# Users per `IN (...)` list: stays far below SQLite's bound-parameter limit.
_IN_CHUNK = 500
# Rows per fetch/convert step in read_ratings when no chunksize is given.
_FETCH_ROWS = 100_000

MOVIE_CT_APP_LABEL = "movies"
MOVIE_CT_MODEL = "movie"
PREDICTIONS_TABLE = "user_predictions"

RATINGS_COLUMNS = ("user_id", "movie_id", "rating", "timestamp", "rating_id")
PREDICTION_COLUMNS = (
    "user_id",
    "movie_id",
    "rank",
    "score",
    "model_version",
    "created_at",
    "source",
)

# SQLite only auto-increments an `INTEGER PRIMARY KEY` (the rowid alias), not `BIGINT`.
_BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class SchemaError(RuntimeError):
    """The database lacks a table this project needs and must not create itself."""


class MissingDatabaseError(RuntimeError):
    """A SQLite URL names a file that does not exist (never created unless asked to)."""


def _user_predictions_table(metadata: sa.MetaData) -> sa.Table:
    # Identical in both presets; each preset's MetaData gets its own copy. A single-column
    # primary key so an unmanaged Django model maps it on any Django version (README).
    return sa.Table(
        PREDICTIONS_TABLE,
        metadata,
        sa.Column("id", _BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        # The app's movie id (joinable to its movies table; no FK, so the app can delete movies).
        sa.Column("movie_id", sa.BigInteger, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        # UTC; timestamptz on PostgreSQL, Django's DATETIME text format on SQLite.
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # How the list was ranked: 'svd' (the model's blend) or 'popular' (cold-start users).
        sa.Column("source", sa.String(16), nullable=True),
        # One row per (user, rank); also serves the per-user lookups.
        sa.Index("ux_user_predictions_user_rank", "user_id", "rank", unique=True),
    )


# --- native preset -------------------------------------------------------------------------

native_metadata = sa.MetaData()

movies = sa.Table(
    "movies",
    native_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("title", sa.Text),
)

ratings = sa.Table(
    "ratings",
    native_metadata,
    sa.Column("id", _BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("movie_id", sa.BigInteger, nullable=False),
    sa.Column("rating", sa.Float, nullable=True),
    sa.Column("active", sa.Boolean, nullable=False, default=True, server_default=sa.true()),
    sa.Column("created_at", sa.BigInteger, nullable=False),  # unix seconds
    sa.Index("ix_ratings_user_id", "user_id"),
    sa.Index("ix_ratings_created_at", "created_at"),
)

# Partial index over the (few) inactive rows: keeps the sensors' count of deactivated ratings
# an index-only lookup instead of a table scan.
ratings_inactive_index = sa.Index(
    "ix_ratings_inactive",
    ratings.c.id,
    sqlite_where=ratings.c.active == sa.false(),
    postgresql_where=ratings.c.active == sa.false(),
)

native_user_predictions = _user_predictions_table(native_metadata)

# --- django preset -------------------------------------------------------------------------
# Only the columns this project reads; a real Django table has more.

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class DjangoSchema:
    """Where the Django app keeps its ratings: table names and the rated content type.

    Defaults are the seed app's (`ratings.Rating` with a GenericForeignKey to `movies.Movie`).
    Validated on construction, so a bad value fails with a message naming it.
    """

    content_type: str = f"{MOVIE_CT_APP_LABEL}.{MOVIE_CT_MODEL}"  # app_label.model
    ratings_table: str = "ratings_rating"
    movies_table: str = "movies_movie"
    content_type_table: str = "django_content_type"

    def __post_init__(self) -> None:
        parts = self.content_type.split(".")
        if len(parts) != 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ValueError(
                f"Django content type {self.content_type!r} (RECSYS_DJANGO_CONTENT_TYPE) must be "
                "'app_label.model', e.g. 'movies.movie'"
            )
        if parts[1] != parts[1].lower():
            raise ValueError(
                f"Django content type {self.content_type!r} (RECSYS_DJANGO_CONTENT_TYPE): Django "
                f"stores the model name in lower case ({parts[0]}.{parts[1].lower()})"
            )
        for field in ("ratings_table", "movies_table", "content_type_table"):
            name = getattr(self, field)
            if not _IDENTIFIER.match(name):
                raise ValueError(
                    f"Django {field.replace('_', ' ')} {name!r} ({DJANGO_SETTINGS[field][0]}) is "
                    "not a plain SQL table name (letters, digits and _; at most 63 characters)"
                )
        names = [self.ratings_table, self.movies_table, self.content_type_table]
        if PREDICTIONS_TABLE in names or len(set(names)) != len(names):
            raise ValueError(
                f"Django table names must differ from each other and from {PREDICTIONS_TABLE!r}: "
                f"{names}"
            )

    @property
    def app_label(self) -> str:
        return self.content_type.split(".")[0]

    @property
    def model(self) -> str:
        return self.content_type.split(".")[1]


DEFAULT_DJANGO_SCHEMA = DjangoSchema()

# A preset argument: "native", "django" (the seed's layout) or a DjangoSchema.
Preset = str | DjangoSchema


class _DjangoTables(NamedTuple):
    content_type: sa.Table
    ratings: sa.Table
    movies: sa.Table
    predictions: sa.Table


def _build_django_tables(schema: DjangoSchema) -> _DjangoTables:
    metadata = sa.MetaData()
    content_type = sa.Table(
        schema.content_type_table,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("app_label", sa.String(100), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.UniqueConstraint("app_label", "model"),
    )
    ratings_table = sa.Table(
        schema.ratings_table,
        metadata,
        sa.Column("id", _BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column(
            "content_type_id",
            sa.Integer,
            sa.ForeignKey(f"{schema.content_type_table}.id"),
            nullable=False,
        ),
        sa.Column("object_id", sa.BigInteger, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, default=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=True),
        sa.Index(f"ix_{schema.ratings_table}_content_type_id", "content_type_id"),
        sa.Index(f"ix_{schema.ratings_table}_user_id", "user_id"),
    )
    movies_table = sa.Table(
        schema.movies_table,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("title", sa.Text),
    )
    return _DjangoTables(
        content_type, ratings_table, movies_table, _user_predictions_table(metadata)
    )


@functools.cache
def django_tables(schema: DjangoSchema = DEFAULT_DJANGO_SCHEMA) -> _DjangoTables:
    """The `Table` objects of one Django layout (cached: one MetaData per layout)."""
    return _build_django_tables(schema)


django_content_type, ratings_rating, movies_movie, django_user_predictions = django_tables()
django_metadata = django_content_type.metadata


def check_preset(preset: Preset) -> str:
    """The preset's name ('native' or 'django'); ValueError listing the allowed values."""
    if isinstance(preset, DjangoSchema):
        return "django"
    if preset not in SCHEMA_PRESETS:
        raise ValueError(
            f"unknown schema preset {preset!r}; allowed values: {', '.join(SCHEMA_PRESETS)}"
        )
    return preset


def _django_schema(preset: Preset) -> DjangoSchema:
    return preset if isinstance(preset, DjangoSchema) else DEFAULT_DJANGO_SCHEMA


def _movies_table(preset: Preset) -> sa.Table:
    if check_preset(preset) == "native":
        return movies
    return django_tables(_django_schema(preset)).movies


# --- engines -------------------------------------------------------------------------------

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


# --- schema --------------------------------------------------------------------------------


def ensure_schema(engine: Engine, preset: Preset) -> None:
    """Create (or upgrade) the tables this project owns for `preset` (idempotent).

    native: movies, ratings, user_predictions. django: only user_predictions; the Django
    tables must already exist with the columns read here, and the rated content type must be
    registered, otherwise SchemaError names what is missing.
    """
    if check_preset(preset) == "native":
        native_metadata.create_all(engine, checkfirst=True)
        _upgrade_predictions(engine, native_user_predictions)
        # create_all skips indexes of tables that already exist (databases made before it).
        ratings_inactive_index.create(engine, checkfirst=True)
        return
    schema = _django_schema(preset)
    tables = django_tables(schema)
    _check_django_tables(engine, schema, tables)
    tables.predictions.create(engine, checkfirst=True)
    _upgrade_predictions(engine, tables.predictions)


def _check_django_tables(engine: Engine, schema: DjangoSchema, tables: _DjangoTables) -> None:
    inspector = sa.inspect(engine)
    where = safe_url(engine)
    for table in (tables.ratings, tables.content_type):
        if not inspector.has_table(table.name):
            raise SchemaError(
                f"schema preset 'django' needs the existing table {table.name!r}, which is "
                f"missing in {where}; run the Django migrations, set the table names "
                "(RECSYS_DJANGO_RATINGS_TABLE, ...) or use RECSYS_SCHEMA=native"
            )
        have = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in have]
        if missing:
            raise SchemaError(
                f"table {table.name!r} in {where} lacks the columns {missing} the django preset "
                f"reads (it has {sorted(have)}); is it the app's ratings table?"
            )
    ct = tables.content_type
    with engine.connect() as conn:
        if conn.execute(_content_type_id_query(schema)).first() is not None:
            return
        registered = [
            f"{a}.{m}" for a, m in conn.execute(sa.select(ct.c.app_label, ct.c.model).limit(50))
        ]
    # An empty content-type table is a database Django has not populated yet (tests); a
    # populated one without ours means the setting names the wrong model.
    if registered:
        raise SchemaError(
            f"content type {schema.content_type!r} is not registered in {ct.name!r} in {where} "
            f"(found: {', '.join(sorted(registered)[:20])}); set RECSYS_DJANGO_CONTENT_TYPE to "
            "the rated model as 'app_label.model'"
        )


def check_ratings_tables(engine: Engine, preset: Preset) -> None:
    """Raise SchemaError naming the first table of `preset`'s ratings that is missing.

    Used where the project must read ratings but must not create their tables (a configured
    database: an empty table created there would only hide the wrong URL).
    """
    if check_preset(preset) == "native":
        tables: tuple[sa.Table, ...] = (ratings, movies)
    else:
        layout = django_tables(_django_schema(preset))
        tables = (layout.ratings, layout.content_type)
    inspector = sa.inspect(engine)
    for table in tables:
        if not inspector.has_table(table.name):
            name = preset if isinstance(preset, str) else "django"
            raise SchemaError(
                f"table {table.name!r} does not exist in {safe_url(engine)} (schema preset "
                f"{name!r}); check RECSYS_DATABASE_URL and RECSYS_SCHEMA"
            )


def _upgrade_predictions(engine: Engine, table: sa.Table) -> None:
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


def create_django_tables(engine: Engine, schema: DjangoSchema = DEFAULT_DJANGO_SCHEMA) -> None:
    """Create the Django app's tables (tests and demos only; production reads them in place)."""
    tables = django_tables(schema)
    tables.content_type.metadata.create_all(
        engine, tables=[tables.content_type, tables.ratings, tables.movies], checkfirst=True
    )


# --- value conversion helpers --------------------------------------------------------------


def _db_values(series: pd.Series) -> list[Any]:
    """Column → list of plain Python scalars for a DBAPI driver (missing → None).

    numpy's `.tolist()` yields Python ints/floats in C, far cheaper than per-row conversion;
    psycopg2 also cannot adapt numpy scalars, so they must not leak through.
    """
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biu":
        return series.to_numpy().tolist()
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        arr = series.to_numpy()
        values = arr.tolist()
        for i in np.flatnonzero(np.isnan(arr)).tolist():
            values[i] = None
        return values
    # object / extension dtypes: rare and small here, so a comprehension is fine.
    arr = series.to_numpy(dtype=object, na_value=None)
    return [v.item() if isinstance(v, np.generic) else v for v in arr.tolist()]


def _id_values(series: pd.Series) -> list[Any]:
    """Like `_db_values`, but whole-number floats (ids that went through NaN-able float
    columns) are sent as ints, which every backend accepts for an integer column."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        arr = series.to_numpy()
        if np.isfinite(arr).all() and (arr == np.floor(arr)).all():
            return arr.astype(np.int64).tolist()
    return _db_values(series)


def to_unix_seconds(values: pd.Series) -> pd.Series:
    """Timestamps in any stored form → int64 unix seconds; missing/unparseable → 0.

    Handles numbers (already unix seconds), datetime objects (naive = UTC, as Django stores
    them with USE_TZ) and the ISO strings SQLite keeps in DATETIME columns.
    """
    if len(values) == 0:
        return pd.Series(np.zeros(0, dtype=np.int64), index=values.index)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.fillna(0).astype(np.int64)
    parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.fillna(0).astype(np.int64)


def _frame_columns(df: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{what} DataFrame is missing columns {missing}; got {list(df.columns)}")


def _batched_insert(
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
    return _db_values(series)


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


def _insert_frame(
    conn: Connection,
    table: sa.Table,
    frame: pd.DataFrame,
    constants: dict[str, Any] | None = None,
    chunk_rows: int = BULK_ROWS,
) -> int:
    """Insert `frame` (columns named like `table`'s) plus `constants` columns, chunk by chunk.

    Python objects exist for one chunk at a time. PostgreSQL: COPY per chunk. SQLite: the
    compiled INSERT executemany'd with plain tuples (values are already what the types' bind
    processors would send). Other backends: SQLAlchemy's executemany.
    """
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
            columns = {name: _db_values(chunk[name]) for name in names}
            _batched_insert(conn, table, columns, BATCH_SIZE)
    return len(frame)


@contextlib.contextmanager
def _indexes_rebuilt_if_empty(conn: Connection, table: sa.Table, rows: int) -> Iterator[None]:
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


# --- ratings -------------------------------------------------------------------------------


def _content_type_id_query(preset: Preset) -> sa.Select:
    schema = _django_schema(preset)
    ct = django_tables(schema).content_type
    return sa.select(ct.c.id).where(ct.c.app_label == schema.app_label, ct.c.model == schema.model)


def _movie_content_type_id(conn: Connection, preset: Preset, create: bool = False) -> int | None:
    stmt = _content_type_id_query(preset)
    ct_id = conn.execute(stmt).scalar()
    if ct_id is None and create:
        schema = _django_schema(preset)
        ct = django_tables(schema).content_type
        conn.execute(ct.insert().values(app_label=schema.app_label, model=schema.model))
        ct_id = conn.execute(stmt).scalar_one()
    return ct_id


def _ratings_query(preset: Preset) -> tuple[sa.Select, sa.ColumnElement[Any]]:
    """SELECT of the active movie ratings for `preset`, plus its row-id column (for ordering).

    The same FROM/WHERE serves read_ratings and count_ratings so their numbers agree.
    """
    if check_preset(preset) == "native":
        r = ratings
        stmt = sa.select(
            r.c.user_id,
            r.c.movie_id,
            r.c.rating,
            r.c.created_at.label("timestamp"),
            r.c.id.label("rating_id"),
        ).where(r.c.active == sa.true())
        return stmt, r.c.id
    schema = _django_schema(preset)
    tables = django_tables(schema)
    rr, ct = tables.ratings, tables.content_type
    stmt = (
        sa.select(
            rr.c.user_id,
            rr.c.object_id.label("movie_id"),
            rr.c.value.label("rating"),
            # Raw value: SQLite keeps DATETIME as text in whatever format the writer used, and
            # SQLAlchemy's own parser rejects some of them; to_unix_seconds parses them all.
            sa.type_coerce(rr.c.timestamp, sa.Text).label("timestamp"),
            rr.c.id.label("rating_id"),
        )
        .select_from(rr.join(ct, rr.c.content_type_id == ct.c.id))
        .where(
            ct.c.app_label == schema.app_label,
            ct.c.model == schema.model,
            rr.c.active == sa.true(),
            # Rows without a user or movie cannot be trained on and cannot be int64.
            rr.c.user_id.is_not(None),
            rr.c.object_id.is_not(None),
        )
    )
    return stmt, rr.c.id


def _raw_ids(values: pd.Series) -> pd.Series:
    """Ids as int64; when some are not whole numbers (text in SQLite's untyped columns) the
    column is float64 with NaN there, left for `clean_ratings` to drop and count."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype(np.int64)
    numeric = pd.to_numeric(values, errors="coerce")
    if pd.api.types.is_integer_dtype(numeric.dtype):
        return numeric.astype(np.int64)
    arr = numeric.to_numpy(np.float64)
    whole = np.isfinite(arr) & (arr == np.floor(arr))
    if whole.all():
        return pd.Series(arr.astype(np.int64), index=values.index)
    return pd.Series(np.where(whole, arr, np.nan), index=values.index)


def _normalize_ratings(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "user_id": _raw_ids(df["user_id"]),
            "movie_id": _raw_ids(df["movie_id"]),
            "rating": df["rating"],
            "timestamp": to_unix_seconds(df["timestamp"]),
            "rating_id": df["rating_id"].astype(np.int64),
        }
    )
    # Raw ratings stay raw: numeric columns become float64 (NULL → NaN); anything else (a
    # string stored in SQLite's untyped column) stays object so downstream cleaning sees it.
    # An all-NULL chunk arrives as object; make it float so chunks concatenate as float64.
    rating = out["rating"]
    numeric = pd.api.types.is_numeric_dtype(rating.dtype)
    if (numeric and not pd.api.types.is_bool_dtype(rating.dtype)) or rating.isna().all():
        out["rating"] = rating.astype(np.float64)
    else:
        out["rating"] = rating.astype(object)
    return out.reset_index(drop=True)


def _empty_ratings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.zeros(0, np.int64),
            "movie_id": np.zeros(0, np.int64),
            "rating": np.zeros(0, np.float64),
            "timestamp": np.zeros(0, np.int64),
            "rating_id": np.zeros(0, np.int64),
        }
    )


def _fetch_frames(conn: Connection, stmt: sa.Select, fetch_rows: int) -> Iterator[pd.DataFrame]:
    """Run `stmt` on the raw DBAPI cursor and yield DataFrames of up to `fetch_rows` rows.

    Plain driver tuples into `DataFrame.from_records` is ~35% faster than going through
    SQLAlchemy Row objects (or pd.read_sql), which matters at tens of millions of ratings.
    Valid only for statements whose columns need no SQLAlchemy result processing; the
    ratings query guarantees that (see `_ratings_query`). On PostgreSQL a server-side (named)
    cursor keeps the result on the server, so client memory holds one chunk of tuples at a time.
    """
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect)
    params = compiled.construct_params()
    args: Any = (
        tuple(params[name] for name in compiled.positiontup or ()) if dialect.positional else params
    )
    dbapi_conn = conn.connection.dbapi_connection
    if dialect.name == "postgresql" and dialect.supports_server_side_cursors:
        cursor = dbapi_conn.cursor(name="recsys_read_ratings")
        cursor.itersize = fetch_rows
    else:
        cursor = dbapi_conn.cursor()
    try:
        cursor.execute(str(compiled), args)
        while rows := cursor.fetchmany(fetch_rows):
            # Read after the first fetch: a server-side cursor has no description before it.
            names = [d[0] for d in cursor.description]
            yield pd.DataFrame.from_records(rows, columns=names, coerce_float=True)
    finally:
        cursor.close()


def read_ratings(engine: Engine, preset: Preset, chunksize: int | None = None) -> pd.DataFrame:
    """All active movie ratings, ordered by row id.

    Columns: user_id, movie_id (int64); rating (float64, or object when the DB holds
    non-numeric values — RAW, never cleaned here); timestamp (int64 unix seconds, NULL → 0);
    rating_id (int64 row id, a stable tie-breaker between duplicate (user, movie) rows).
    Rows are fetched and converted `chunksize` at a time (default 100k) and concatenated, so
    per-row Python objects never exist for more than one chunk.
    """
    stmt, id_col = _ratings_query(preset)
    # Ordering by the primary key keeps reads deterministic (reproducible CV splits) and is
    # an index scan, not a sort.
    stmt = stmt.order_by(id_col)
    fetch_rows = int(chunksize) if chunksize else _FETCH_ROWS
    if fetch_rows < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    with engine.connect() as conn:
        # Normalising per chunk turns the per-row Python objects into numpy columns early.
        parts = [_normalize_ratings(frame) for frame in _fetch_frames(conn, stmt, fetch_rows)]
    if not parts:
        return _empty_ratings()
    if len(parts) == 1:
        return parts[0]
    return pd.concat(parts, ignore_index=True)


def count_ratings(engine: Engine, preset: Preset) -> int:
    """Number of rows `read_ratings` would return (active movie ratings)."""
    stmt, _ = _ratings_query(preset)
    count = sa.select(sa.func.count()).select_from(stmt.subquery())
    with engine.connect() as conn:
        return int(conn.execute(count).scalar_one())


def insert_ratings(
    engine: Engine, preset: Preset, ratings_df: pd.DataFrame, batch_size: int = BATCH_SIZE
) -> int:
    """Bulk-insert ratings[user_id, movie_id, rating, timestamp] as active rows; return count.

    One transaction: either all rows land or none. `timestamp` is unix seconds (datetime64
    also accepted). For the django preset rows go to ratings_rating under the movies content
    type, which is created if missing.
    """
    native = check_preset(preset) == "native"
    _frame_columns(ratings_df, ("user_id", "movie_id", "rating", "timestamp"), "ratings")
    if ratings_df.empty:
        return 0
    seconds = to_unix_seconds(ratings_df["timestamp"])
    if native and _is_numeric(ratings_df[["user_id", "movie_id", "rating"]]):
        # The bulk path: numpy columns converted a chunk at a time (COPY on PostgreSQL).
        frame = pd.DataFrame(
            {
                "user_id": ratings_df["user_id"].to_numpy(np.int64),
                "movie_id": ratings_df["movie_id"].to_numpy(np.int64),
                "rating": ratings_df["rating"].to_numpy(np.float64),
                "created_at": seconds.to_numpy(np.int64),
            }
        )
        with engine.begin() as conn, _indexes_rebuilt_if_empty(conn, ratings, len(frame)):
            return _insert_frame(conn, ratings, frame, constants={"active": True})
    user_ids = _id_values(ratings_df["user_id"])
    movie_ids = _id_values(ratings_df["movie_id"])
    values = _db_values(ratings_df["rating"])
    n = len(ratings_df)
    with engine.begin() as conn:
        if native:
            columns = {
                "user_id": user_ids,
                "movie_id": movie_ids,
                "rating": values,
                "active": [True] * n,
                "created_at": seconds.tolist(),
            }
            return _batched_insert(conn, ratings, columns, batch_size)
        ct_id = _movie_content_type_id(conn, preset, create=True)
        # Django's DateTimeField(auto_now_add) has no DB default, so we always send a value.
        stamps = pd.DatetimeIndex(pd.to_datetime(seconds.to_numpy(), unit="s", utc=True))
        columns = {
            "user_id": user_ids,
            "object_id": movie_ids,
            "value": values,
            "content_type_id": [ct_id] * n,
            "active": [True] * n,
            "timestamp": list(stamps.to_pydatetime()),
        }
        return _batched_insert(
            conn, django_tables(_django_schema(preset)).ratings, columns, batch_size
        )


def _is_numeric(frame: pd.DataFrame) -> bool:
    """Whole-number ids and float ratings: safe for the bulk path (anything else is validated
    value by value by the SQLAlchemy path, which rejects what the column types refuse)."""
    for name, dtype in frame.dtypes.items():
        if not (
            isinstance(dtype, np.dtype) and dtype.kind in ("iu" if name != "rating" else "iuf")
        ):
            return False
    return True


def delete_ratings(engine: Engine, preset: Preset) -> int:
    """Delete every movie rating (native: also the movies); return ratings deleted.

    For the django preset only ratings_rating rows of the movies content type are removed;
    movies_movie is left alone because other Django tables may reference it.
    """
    native = check_preset(preset) == "native"
    with engine.begin() as conn:
        if native:
            deleted = conn.execute(sa.delete(ratings)).rowcount
            conn.execute(sa.delete(movies))
            return int(deleted)
        ct_id = _movie_content_type_id(conn, preset)
        if ct_id is None:
            return 0
        rr = django_tables(_django_schema(preset)).ratings
        stmt = sa.delete(rr).where(rr.c.content_type_id == ct_id)
        return int(conn.execute(stmt).rowcount)


# --- movies --------------------------------------------------------------------------------


def read_movie_titles(engine: Engine, preset: Preset) -> dict[int, str]:
    """{movie id: title} for every movie with a title ({} if the django movies table is absent)."""
    table = _movies_table(preset)
    if check_preset(preset) == "django" and not sa.inspect(engine).has_table(table.name):
        return {}
    stmt = sa.select(table.c.id, table.c.title).where(table.c.title.is_not(None))
    with engine.connect() as conn:
        return {int(i): str(t) for i, t in conn.execute(stmt)}


def insert_movies(
    engine: Engine, preset: Preset, movies_df: pd.DataFrame, batch_size: int = BATCH_SIZE
) -> int:
    """Insert movies[id, title], skipping ids that already exist; return rows inserted."""
    table = _movies_table(preset)
    _frame_columns(movies_df, ("id", "title"), "movies")
    frame = movies_df.drop_duplicates(subset="id", keep="first")
    with engine.begin() as conn:
        # Movie tables are small (≤ ~100k rows), so reading existing ids beats per-dialect
        # ON CONFLICT syntax and gives an exact inserted count.
        existing = np.fromiter(
            (int(i) for i in conn.execute(sa.select(table.c.id)).scalars()), dtype=np.int64
        )
        ids = pd.to_numeric(frame["id"]).astype(np.int64)
        frame = frame[~ids.isin(existing).to_numpy()]
        if frame.empty:
            return 0
        columns = {
            "id": _db_values(pd.to_numeric(frame["id"]).astype(np.int64)),
            "title": _db_values(frame["title"].astype(object)),
        }
        return _batched_insert(conn, table, columns, batch_size)


# --- predictions ---------------------------------------------------------------------------


def _in_chunks(values: Sequence[int], size: int = _IN_CHUNK) -> Iterator[list[int]]:
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
    batch_size: int = BATCH_SIZE,
) -> int:
    """Atomically swap in a new set of top-N predictions; return rows written.

    predictions: [user_id, movie_id, rank, score] and optionally source. In one transaction,
    delete the previous rows — all of them when `users` is None, else only those users' rows —
    then bulk-insert the new ones. Any failure rolls back, so readers never see a half-written set.
    With `users`, every prediction row must belong to one of them (otherwise the same user
    could end up with two generations of predictions).
    """
    _frame_columns(predictions, ("user_id", "movie_id", "rank", "score"), "predictions")
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
    bulk = (
        _is_numeric(predictions[["user_id", "movie_id", "rank"]])
        and _is_numeric(predictions[["score"]].rename(columns={"score": "rating"}))
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
            for chunk in _in_chunks(user_list):
                conn.execute(sa.delete(table).where(table.c.user_id.in_(chunk)))
        # Readers see the old set until the commit; a failure anywhere rolls the delete back.
        if bulk:
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
            with _indexes_rebuilt_if_empty(conn, table, len(frame)):
                return _insert_frame(conn, table, frame, constants, chunk_rows=batch_size)
        # Anything else (object columns from callers) goes value by value through
        # SQLAlchemy's type checks, which reject what the columns cannot hold.
        n = len(predictions)
        columns = {
            "user_id": _id_values(predictions["user_id"]),
            "movie_id": _id_values(predictions["movie_id"]),
            "rank": _id_values(predictions["rank"]),
            "score": _db_values(predictions["score"]),
            "model_version": [str(model_version)] * n,
            "created_at": [created] * n,
            "source": _db_values(predictions["source"]) if "source" in predictions else [None] * n,
        }
        return _batched_insert(conn, table, columns, batch_size)


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


# --- change tracking (sensors) -------------------------------------------------------------


class RatingsWatermark(NamedTuple):
    """Cheap fingerprint of the ratings table, compared tick to tick by the ratings sensor.

    max_id: highest row id (primary-key index) — grows with every new rating. inactive: rows
    with active = false (partial index in the native preset) — grows when the app deactivates
    a rating, as the Django app does for the previous rating when a user re-rates a movie.
    """

    max_id: int
    inactive: int


class RatingsChanges(NamedTuple):
    """Active movie ratings with ids in (after_id, upto_id], grouped by user."""

    new_ratings: int
    user_ids: list[int]


def ratings_watermark(engine: Engine, preset: Preset) -> RatingsWatermark:
    """max(id) of the ratings table and its inactive-row count (django: of the rated content
    type only, so re-ratings of other content types do not count towards retraining).

    Two index lookups, no table scan: max over the primary key, and a count over the inactive
    rows (native: partial index `ix_ratings_inactive`; django: add the index in the README).
    """
    if check_preset(preset) == "native":
        table = ratings
        inactive = sa.select(sa.func.count()).select_from(table).where(table.c.active == sa.false())
    else:
        table = django_tables(_django_schema(preset)).ratings
        ct_id = _content_type_id_query(preset).scalar_subquery()
        inactive = (
            sa.select(sa.func.count())
            .select_from(table)
            .where(table.c.active == sa.false(), table.c.content_type_id == ct_id)
        )
    max_id = sa.select(sa.func.max(table.c.id))
    with engine.connect() as conn:
        return RatingsWatermark(
            max_id=int(conn.execute(max_id).scalar() or 0),
            inactive=int(conn.execute(inactive).scalar_one()),
        )


def ratings_changes(engine: Engine, preset: Preset, after_id: int, upto_id: int) -> RatingsChanges:
    """New active movie ratings with row id in (after_id, upto_id] and the users who made them.

    A range scan on the primary key: the cost follows the number of new rows, not the table.
    """
    stmt, id_col = _ratings_query(preset)
    sub = stmt.where(id_col > int(after_id), id_col <= int(upto_id)).subquery()
    per_user = (
        sa.select(sub.c.user_id, sa.func.count().label("n"))
        .group_by(sub.c.user_id)
        .order_by(sub.c.user_id)
    )
    with engine.connect() as conn:
        rows = conn.execute(per_user).all()
    return RatingsChanges(
        new_ratings=int(sum(n for _, n in rows)), user_ids=[int(u) for u, _ in rows]
    )


def read_user_ratings(engine: Engine, preset: Preset, user_ids: Sequence[int]) -> pd.DataFrame:
    """Active movie ratings of the given users (same columns as `read_ratings`, raw values).

    Used to rescore a few users without reading the whole table; uses the user_id index.
    """
    stmt, id_col = _ratings_query(preset)
    users = sorted({int(u) for u in user_ids})
    parts: list[pd.DataFrame] = []
    with engine.connect() as conn:
        for chunk in _in_chunks(users):
            # A few users' rows: the plain execute path (IN lists need SQLAlchemy's expansion).
            query = stmt.where(stmt.selected_columns.user_id.in_(chunk)).order_by(id_col)
            result = conn.execute(query)
            rows = result.all()
            if rows:
                frame = pd.DataFrame.from_records(rows, columns=list(result.keys()))
                parts.append(_normalize_ratings(frame))
    if not parts:
        return _empty_ratings()
    return pd.concat(parts, ignore_index=True)


def read_unrated_pairs(
    engine: Engine, preset: Preset, user_ids: Sequence[int] | None = None
) -> pd.DataFrame:
    """(user_id, movie_id) of active rows whose rating is NULL (optionally for some users).

    Those rows are not trained on, but the user has interacted with the movie (e.g. marked it
    seen), so it must not be suggested to them. Few rows; one scan of the active ratings.
    Duplicates are removed here: a DISTINCT makes SQLite walk the user_id index instead
    (1M ratings: 9.5 s instead of 0.4 s).
    """
    stmt, _ = _ratings_query(preset)
    sub = stmt.subquery()
    query = sa.select(sub.c.user_id, sub.c.movie_id).where(sub.c.rating.is_(None))
    chunks: list[list[int] | None] = (
        [None] if user_ids is None else list(_in_chunks(sorted({int(u) for u in user_ids})))
    )
    rows: list[Any] = []
    with engine.connect() as conn:
        for chunk in chunks:
            q = query if chunk is None else query.where(sub.c.user_id.in_(chunk))
            rows.extend(conn.execute(q).all())
    arr = np.unique(np.array(rows, dtype=np.int64).reshape(-1, 2), axis=0)
    return pd.DataFrame({"user_id": arr[:, 0], "movie_id": arr[:, 1]})


__all__ = [
    "BATCH_SIZE",
    "PREDICTION_COLUMNS",
    "RATINGS_COLUMNS",
    "RatingsChanges",
    "RatingsWatermark",
    "MissingDatabaseError",
    "SchemaError",
    "check_preset",
    "check_ratings_tables",
    "count_ratings",
    "create_django_tables",
    "delete_ratings",
    "dispose_engines",
    "ensure_schema",
    "insert_movies",
    "insert_ratings",
    "make_engine",
    "read_movie_titles",
    "read_predictions",
    "read_unrated_pairs",
    "DjangoSchema",
    "ratings_changes",
    "ratings_watermark",
    "read_ratings",
    "read_user_ratings",
    "replace_predictions",
    "safe_url",
    "sqlite_file",
    "to_unix_seconds",
]
