"""Explicit, counted cleaning of raw ratings.

The old pipeline called `df['rating'].dropna(inplace=True)`, which drops from a temporary copy and
so removes nothing. Here every dropped row is counted by reason and reported, rows kept with a
doubtful timestamp are counted too, and `invalid_share_problem` says when so many rows were
unusable that a setting (the rating scale) or the data must be wrong.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

RATING_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]

# Drop reasons that mean a row could not be used as stored. NULL ratings (a movie marked
# seen without a value) and older duplicates (re-ratings) are ordinary data, not counted here.
INVALID_REASONS = ("bad_user_id", "bad_movie_id", "non_numeric_rating", "out_of_scale")
_INVALID_WHAT = {
    "bad_user_id": "user ids missing, text or fractional",
    "bad_movie_id": "movie ids missing, text or fractional",
    "non_numeric_rating": "ratings stored as text that is not a number",
    "out_of_scale": "ratings outside the rating scale",
}
# A timestamp this far past the cleaning's clock is "future" (clock skew between the app's
# server and this one stays below it).
FUTURE_SLACK_SECONDS = 86_400


@dataclass
class CleaningReport:
    rows_read: int
    rows_kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    # Rows kept, but with a timestamp that says nothing: missing/unparseable (read as 0) or
    # in the future. They never decide which of a pair's ratings is the latest.
    flagged: dict[str, int] = field(default_factory=dict)
    scale: tuple[float, float] = (-np.inf, np.inf)
    # Lowest and highest numeric rating stored (rows with usable ids), None when there is none.
    stored_range: tuple[float, float] | None = None

    @property
    def rows_dropped(self) -> int:
        return self.rows_read - self.rows_kept

    @property
    def rows_invalid(self) -> int:
        return sum(self.dropped.get(reason, 0) for reason in INVALID_REASONS)

    @property
    def invalid_fraction(self) -> float:
        return self.rows_invalid / self.rows_read if self.rows_read else 0.0


def invalid_share_problem(report: CleaningReport, max_fraction: float) -> str | None:
    """Why the rows dropped as invalid are too many to train on the rest, or None.

    Names each reason with its count, and the setting that changes the outcome: the rating
    scale for out-of-scale rows, else the allowed share (`max_fraction`).
    """
    if report.invalid_fraction <= max_fraction:
        return None
    low, high = report.scale
    reasons = []
    for reason in INVALID_REASONS:
        count = report.dropped.get(reason, 0)
        if count:
            what = _INVALID_WHAT[reason]
            if reason == "out_of_scale":
                what += f" {low:g}–{high:g}"
                if report.stored_range is not None:
                    what += (
                        f"; the stored ratings run from {report.stored_range[0]:g} "
                        f"to {report.stored_range[1]:g}"
                    )
            reasons.append(f"{reason} {count} ({what})")
    fix = []
    if report.dropped.get("out_of_scale", 0):
        fix.append(
            "if the ratings use another scale, set it: RECSYS_RATING_SCALE=MIN,MAX or "
            "`recsys run --rating-scale MIN,MAX` (ratings_df config rating_min/rating_max)"
        )
    fix.append(
        "if these rows really are bad, fix them or allow a larger share: "
        "RECSYS_MAX_INVALID_FRACTION (ratings_df config max_invalid_fraction)"
    )
    return (
        f"cleaning would drop {report.rows_invalid} of {report.rows_read} ratings "
        f"({report.invalid_fraction:.1%}) as unusable, more than the allowed "
        f"{max_fraction:.1%}: {'; '.join(reasons)}. Nothing is trained on the rest; "
        f"{'; '.join(fix)}"
    )


def _compact_ids(ids: pd.Series) -> pd.Series:
    # int32 halves the memory of the id columns at 25M rows; fall back when ids don't fit.
    if len(ids) and ids.max() <= np.iinfo(np.int32).max and ids.min() >= np.iinfo(np.int32).min:
        return ids.astype(np.int32)
    return ids.astype(np.int64)


def _compact_ratings(values: np.ndarray) -> np.ndarray:
    # float32 halves the column at 25M rows; only when every value survives the round trip
    # (half stars do; a 3.7 from a foreign source would not, and stays float64).
    small = values.astype(np.float32)
    if np.array_equal(small.astype(np.float64), values):
        return small
    return values


def _bad_ids(ids: pd.Series) -> pd.Series:
    """True where an id is missing, not a number or not a whole number (an integer column
    has none: the fast path at tens of millions of rows)."""
    if pd.api.types.is_integer_dtype(ids.dtype):
        return pd.Series(np.zeros(len(ids), dtype=bool), index=ids.index)
    numeric = pd.to_numeric(ids, errors="coerce").astype(np.float64)
    return ~(np.isfinite(numeric) & (numeric == np.floor(numeric)))


def _id_array(ids: pd.Series, rows: np.ndarray) -> np.ndarray:
    if pd.api.types.is_integer_dtype(ids.dtype):
        return ids.to_numpy(np.int64)[rows]
    return pd.to_numeric(ids, errors="coerce").to_numpy(np.float64)[rows].astype(np.int64)


def clean_ratings(
    raw: pd.DataFrame, scale: tuple[float, float], now: float | None = None
) -> tuple[pd.DataFrame, CleaningReport]:
    """Drop rows with a bad user or movie id (missing, text, fractional), NULL, non-numeric and
    out-of-scale ratings, and older duplicates of a (user, movie) pair; count each reason.
    Count the rows kept whose timestamp is missing (0 or less: NULL and unparseable values
    are read as 0) or more than a day past `now` (default: the current time).

    `raw` has user_id, movie_id, rating (as stored, possibly NULL or text), timestamp and
    optionally rating_id, the row's id in the database. Of a pair's duplicates the one with
    the highest rating_id is kept: the id is given by the database when the row is written,
    so it orders re-ratings as they happened, while a timestamp is whatever the writer sent
    (NULL, a skewed clock, the year 2100). Clamping future stamps to `now` would not do: a
    row dated 2100 clamped to now still outranks yesterday's re-rating. Without rating_id the
    latest timestamp wins, then the later row.
    """
    low, high = scale
    if low >= high:
        raise ValueError(f"rating scale must be (min, max) with min < max, got {scale}")
    rows_read = len(raw)
    bad_user = _bad_ids(raw["user_id"])
    bad_movie = _bad_ids(raw["movie_id"]) & ~bad_user  # a row is counted under one reason
    good_ids = ~(bad_user | bad_movie)
    null = raw["rating"].isna() & good_ids
    numeric = pd.to_numeric(raw["rating"], errors="coerce").astype(np.float64)
    non_numeric = numeric.isna() & ~raw["rating"].isna() & good_ids
    out_of_scale = numeric.notna() & ((numeric < low) | (numeric > high)) & good_ids
    keep = good_ids & ~(null | non_numeric | out_of_scale)

    kept = np.flatnonzero(keep.to_numpy())
    users = _id_array(raw["user_id"], kept)
    movies = _id_array(raw["movie_id"], kept)
    timestamps = raw["timestamp"].to_numpy(np.int64)[kept]
    clock = time.time() if now is None else now
    flagged = {
        "missing_timestamp": int(np.count_nonzero(timestamps <= 0)),
        "future_timestamp": int(np.count_nonzero(timestamps > clock + FUTURE_SLACK_SECONDS)),
    }
    # One stable sort by (user, movie, row id), or without row ids (user, movie, timestamp):
    # each pair's rows end with its latest rating (see the docstring), and the result comes
    # out ordered by (user, movie). At 25M rows one lexsort replaces two sorts and a dedupe.
    if "rating_id" in raw.columns:
        keys = [raw["rating_id"].to_numpy(np.int64)[kept], movies, users]
    else:
        keys = [timestamps, movies, users]
    order = np.lexsort(keys)
    users, movies = users[order], movies[order]
    last = np.ones(order.size, dtype=bool)  # the last row of each (user, movie) run
    last[:-1] = (users[1:] != users[:-1]) | (movies[1:] != movies[:-1])
    rows = kept[order[last]]
    duplicates = int(order.size - rows.size)
    out = pd.DataFrame(
        {
            "user_id": _compact_ids(pd.Series(users[last])),
            "movie_id": _compact_ids(pd.Series(movies[last])),
            "rating": _compact_ratings(numeric.to_numpy(np.float64)[rows]),
            "timestamp": timestamps[order[last]],
        }
    )
    report = CleaningReport(
        rows_read=rows_read,
        rows_kept=len(out),
        dropped={
            "bad_user_id": int(bad_user.sum()),
            "bad_movie_id": int(bad_movie.sum()),
            "null_rating": int(null.sum()),
            "non_numeric_rating": int(non_numeric.sum()),
            "out_of_scale": int(out_of_scale.sum()),
            "duplicate_pair": int(duplicates),
        },
        flagged=flagged,
        scale=(float(low), float(high)),
        stored_range=_stored_range(numeric[good_ids & numeric.notna()]),
    )
    return out, report


def _stored_range(values: pd.Series) -> tuple[float, float] | None:
    if values.empty:
        return None
    return float(values.min()), float(values.max())
