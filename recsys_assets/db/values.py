"""Conversions between pandas columns and what DBAPI drivers accept or return."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def db_values(series: pd.Series) -> list[Any]:
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


def id_values(series: pd.Series) -> list[Any]:
    """Like `db_values`, but whole-number floats (ids that went through NaN-able float
    columns) are sent as ints, which every backend accepts for an integer column."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        arr = series.to_numpy()
        if np.isfinite(arr).all() and (arr == np.floor(arr)).all():
            return arr.astype(np.int64).tolist()
    return db_values(series)


def to_unix_seconds(values: pd.Series) -> pd.Series:
    """Timestamps in any stored form → int64 unix seconds; missing/unparseable → 0.

    Handles numbers (already unix seconds), datetime objects (naive = UTC, as Django stores
    them with USE_TZ) and the ISO strings SQLite keeps in DATETIME columns.
    """
    if len(values) == 0:
        return pd.Series(np.zeros(0, dtype=np.int64), index=values.index)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.fillna(0).astype(np.int64)
    if values.dtype == object:
        # Numbers beside text (one bad value in SQLite's untyped column): the numbers are unix
        # seconds, not the nanoseconds pandas' datetime parser would take them for.
        numbers = values.map(_is_number).to_numpy(bool)
        if numbers.any():
            out = pd.Series(np.zeros(len(values), dtype=np.int64), index=values.index)
            out[numbers] = pd.to_numeric(values[numbers]).fillna(0).astype(np.int64)
            out[~numbers] = to_unix_seconds(values[~numbers])  # text, datetimes, None
            return out
    parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.fillna(0).astype(np.int64)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def check_columns(df: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{what} DataFrame is missing columns {missing}; got {list(df.columns)}")


def is_numeric(frame: pd.DataFrame) -> bool:
    """Whole-number ids and float ratings: safe for the bulk path (anything else is validated
    value by value by the SQLAlchemy path, which rejects what the column types refuse)."""
    for name, dtype in frame.dtypes.items():
        if not (
            isinstance(dtype, np.dtype) and dtype.kind in ("iu" if name != "rating" else "iuf")
        ):
            return False
    return True
