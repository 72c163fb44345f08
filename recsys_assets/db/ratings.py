"""Ratings and movies: the one way to read ratings (whole table, some users, counts), to
load them, and to read titles. Every query starts from the preset's `ratings_query`, so the
numbers of reads, counts and the sensors' change ranges agree."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from recsys_assets.db import adbc, bulk
from recsys_assets.db.engines import safe_url
from recsys_assets.db.predictions import in_chunks
from recsys_assets.db.presets import Preset, RatingRows, preset_of
from recsys_assets.db.values import check_columns, db_values, id_values, to_unix_seconds

log = logging.getLogger(__name__)

# Rows per fetch/convert step in read_ratings when no chunksize is given.
_FETCH_ROWS = 100_000


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
    presets' `ratings_query` guarantees that. On PostgreSQL a server-side (named) cursor
    keeps the result on the server, so client memory holds one chunk of tuples at a time.
    The driver's errors come back as SQLAlchemy's, as on every other path (see
    `_driver_errors_wrapped`).
    """
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect)
    params = compiled.construct_params()
    args: Any = (
        tuple(params[name] for name in compiled.positiontup or ()) if dialect.positional else params
    )
    sql = str(compiled)
    with _driver_errors_wrapped(conn, sql):
        dbapi_conn = conn.connection.dbapi_connection
        if dialect.name == "postgresql" and dialect.supports_server_side_cursors:
            cursor = dbapi_conn.cursor(name="recsys_read_ratings")
            cursor.itersize = fetch_rows
        else:
            cursor = dbapi_conn.cursor()
        try:
            cursor.execute(sql, args)
            while rows := cursor.fetchmany(fetch_rows):
                # Read after the first fetch: a server-side cursor has no description before it.
                names = [d[0] for d in cursor.description]
                yield pd.DataFrame.from_records(rows, columns=names, coerce_float=True)
        except BaseException:
            # The connection may be gone; closing a server-side cursor would then raise and
            # hide the error that says so.
            with contextlib.suppress(Exception):
                cursor.close()
            raise
        cursor.close()


@contextlib.contextmanager
def _driver_errors_wrapped(conn: Connection, statement: str) -> Iterator[None]:
    """Raise the driver's errors from a raw cursor as SQLAlchemy would: wrapped in its
    DBAPIError classes, and on a lost connection with the connection invalidated, so the
    pool discards it instead of resetting a dead socket ("Exception during reset")."""
    dialect = conn.dialect
    base = dialect.loaded_dbapi.Error
    try:
        yield
    except base as exc:
        lost = dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            statement, None, exc, base, connection_invalidated=lost, dialect=dialect
        ) from exc


# Which reader `read_ratings` uses: ADBC's Arrow batches (the tuple reader where ADBC cannot
# read as it would), or the DB-API driver's tuples only (the baseline, `reader="tuples"`).
READERS = ("adbc", "tuples")


class RatingsRead(NamedTuple):
    """A `read_ratings_with_reader` result: the frame, the reader that produced it and, when
    that is the tuple reader though ADBC was asked for, why ADBC did not read."""

    frame: pd.DataFrame
    reader: str
    fallback: str | None = None


def read_ratings(
    engine: Engine, preset: Preset, chunksize: int | None = None, reader: str = "adbc"
) -> pd.DataFrame:
    """All active movie ratings, ordered by row id.

    Columns: user_id, movie_id (int64); rating (float64, or object when the DB holds
    non-numeric values — RAW, never cleaned here); timestamp (int64 unix seconds, NULL → 0);
    rating_id (int64 row id, a stable tie-breaker between duplicate (user, movie) rows).
    Rows are fetched and converted `chunksize` at a time (default 100k; ADBC's batches on
    PostgreSQL are sized in bytes to about that) and concatenated. `reader`: see
    `read_ratings_with_reader`.
    """
    return read_ratings_with_reader(engine, preset, chunksize, reader).frame


def read_ratings_with_reader(
    engine: Engine, preset: Preset, chunksize: int | None = None, reader: str = "adbc"
) -> RatingsRead:
    """`read_ratings`, saying which reader read. "adbc": ADBC's Arrow batches; where ADBC
    cannot read as the tuple reader would (a URL it cannot open, text in a SQLite rating, a
    type it would convert otherwise, any ADBC error) the tuple reader reads everything again,
    and its errors are the ones raised. "tuples": the DB-API driver's tuples only."""
    if reader not in READERS:
        raise ValueError(f"reader must be one of {', '.join(READERS)}, got {reader!r}")
    layout = preset_of(preset)
    # Ordering by the primary key keeps reads deterministic (reproducible CV splits) and is
    # an index scan, not a sort.
    stmt = layout.ratings_query.order_by(layout.rating_id)
    fetch_rows = int(chunksize) if chunksize else _FETCH_ROWS
    if fetch_rows < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    fallback = None
    if reader == "adbc":
        try:
            return RatingsRead(_read_adbc(engine, stmt, fetch_rows), "adbc")
        except adbc.AdbcRefused as exc:
            fallback = str(exc)
        log.warning(
            "ratings read from %s with the DB-API driver's tuples, not ADBC: %s",
            safe_url(engine),
            fallback,
        )
    with engine.connect() as conn:
        # Normalising per chunk turns the per-row Python objects into numpy columns early.
        parts = [_normalize_ratings(frame) for frame in _fetch_frames(conn, stmt, fetch_rows)]
    return RatingsRead(_joined(parts), "tuples", fallback)


def _read_adbc(engine: Engine, stmt: sa.Select, fetch_rows: int) -> pd.DataFrame:
    try:
        # Values inlined: PostgreSQL's COPY, which ADBC streams, takes no parameters (with
        # them ADBC would fetch the whole result at once). The presets' values are validated
        # identifiers, and SQLAlchemy quotes them.
        sql = str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    except sa.exc.CompileError as exc:
        raise adbc.AdbcRefused(f"the statement cannot be inlined ({exc})") from exc
    # Each batch becomes a frame as it arrives, so no whole Arrow table sits beside them.
    parts = [
        _normalize_ratings(batch.to_pandas())
        for batch in adbc.arrow_batches(engine, sql, fetch_rows)
    ]
    return _joined(parts)


def _joined(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return _empty_ratings()
    if len(parts) == 1:
        return parts[0]
    return pd.concat(parts, ignore_index=True)


def count_ratings(engine: Engine, preset: Preset) -> int:
    """Number of rows `read_ratings` would return (active movie ratings)."""
    stmt = preset_of(preset).ratings_query
    count = sa.select(sa.func.count()).select_from(stmt.subquery())
    with engine.connect() as conn:
        return int(conn.execute(count).scalar_one())


def insert_ratings(
    engine: Engine, preset: Preset, ratings_df: pd.DataFrame, batch_size: int = bulk.BATCH_SIZE
) -> int:
    """Bulk-insert ratings[user_id, movie_id, rating, timestamp] as active rows; return count.

    One transaction: either all rows land or none. `timestamp` is unix seconds (datetime64
    also accepted). For the django preset rows go to ratings_rating under the movies content
    type, which is created if missing.
    """
    layout = preset_of(preset)
    check_columns(ratings_df, ("user_id", "movie_id", "rating", "timestamp"), "ratings")
    if ratings_df.empty:
        return 0
    seconds = to_unix_seconds(ratings_df["timestamp"])
    frame = layout.bulk_ratings_frame(ratings_df, seconds)
    if frame is not None:
        # The bulk path: numpy columns converted a chunk at a time (COPY on PostgreSQL).
        table = layout.ratings
        with engine.begin() as conn, bulk.indexes_rebuilt_if_empty(conn, table, len(frame)):
            return bulk.insert_frame(conn, table, frame, constants={"active": True})
    # Anything else goes value by value through SQLAlchemy's type checks.
    rows = RatingRows(
        user_ids=id_values(ratings_df["user_id"]),
        movie_ids=id_values(ratings_df["movie_id"]),
        values=db_values(ratings_df["rating"]),
        seconds=seconds,
    )
    with engine.begin() as conn:
        columns = layout.rating_columns(conn, rows)
        return bulk.batched_insert(conn, layout.ratings, columns, batch_size)


def delete_ratings(engine: Engine, preset: Preset) -> int:
    """Delete every movie rating (native: also the movies); return ratings deleted.

    For the django preset only ratings_rating rows of the movies content type are removed;
    movies_movie is left alone because other Django tables may reference it.
    """
    with engine.begin() as conn:
        return preset_of(preset).delete_ratings(conn)


# --- movies --------------------------------------------------------------------------------


def read_movie_titles(engine: Engine, preset: Preset) -> dict[int, str]:
    """{movie id: title} for every movie with a title ({} if the django movies table is absent)."""
    layout = preset_of(preset)
    table = layout.movies
    if layout.movies_optional and not sa.inspect(engine).has_table(table.name):
        return {}
    stmt = sa.select(table.c.id, table.c.title).where(table.c.title.is_not(None))
    with engine.connect() as conn:
        return {int(i): str(t) for i, t in conn.execute(stmt)}


def insert_movies(
    engine: Engine, preset: Preset, movies_df: pd.DataFrame, batch_size: int = bulk.BATCH_SIZE
) -> int:
    """Insert movies[id, title], skipping ids that already exist; return rows inserted."""
    table = preset_of(preset).movies
    check_columns(movies_df, ("id", "title"), "movies")
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
            "id": db_values(pd.to_numeric(frame["id"]).astype(np.int64)),
            "title": db_values(frame["title"].astype(object)),
        }
        return bulk.batched_insert(conn, table, columns, batch_size)


def read_user_ratings(engine: Engine, preset: Preset, user_ids: Sequence[int]) -> pd.DataFrame:
    """Active movie ratings of the given users (same columns as `read_ratings`, raw values).

    Used to rescore a few users without reading the whole table; uses the user_id index.
    """
    layout = preset_of(preset)
    stmt, id_col = layout.ratings_query, layout.rating_id
    users = sorted({int(u) for u in user_ids})
    parts: list[pd.DataFrame] = []
    with engine.connect() as conn:
        for chunk in in_chunks(users):
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
    sub = preset_of(preset).ratings_query.subquery()
    query = sa.select(sub.c.user_id, sub.c.movie_id).where(sub.c.rating.is_(None))
    chunks: list[list[int] | None] = (
        [None] if user_ids is None else list(in_chunks(sorted({int(u) for u in user_ids})))
    )
    rows: list[Any] = []
    with engine.connect() as conn:
        for chunk in chunks:
            q = query if chunk is None else query.where(sub.c.user_id.in_(chunk))
            rows.extend(conn.execute(q).all())
    arr = np.unique(np.array(rows, dtype=np.int64).reshape(-1, 2), axis=0)
    return pd.DataFrame({"user_id": arr[:, 0], "movie_id": arr[:, 1]})
