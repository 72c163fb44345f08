"""Array helpers the model modules share: raw-id lookups, sorted distinct ids, rating triples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Ratings", "lookup", "unique"]


def unique(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an integer array (flattened), as ``np.unique`` returns them.

    By sorting: NumPy 2.4's ``np.unique`` hashes, which took 16.6 s for the user ids of 25M
    ratings here, against 0.6 s sorted (`bench/bench_unique.py`).
    """
    ordered = np.sort(np.asarray(values).ravel())
    if ordered.size == 0:
        return ordered
    first = np.empty(ordered.size, dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


@dataclass(frozen=True)
class Ratings:
    """Parallel raw-id arrays of (user, movie, rating)."""

    users: np.ndarray
    movies: np.ndarray
    ratings: np.ndarray

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"user_id": self.users, "movie_id": self.movies})

    def take(self, index: np.ndarray) -> Ratings:
        return Ratings(self.users[index], self.movies[index], self.ratings[index])


def lookup(raw_ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Map raw ids in ``query`` to positions in ``raw_ids`` (-1 where absent)."""
    if raw_ids.size == 0 or query.size == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    lo, hi = int(raw_ids.min()), int(raw_ids.max())
    if lo >= 0 and hi <= 4 * raw_ids.size + 1_000_000:
        # Typical database ids are small and dense: a direct table beats binary search.
        table = np.full(hi + 1, -1, dtype=np.int64)
        table[raw_ids] = np.arange(raw_ids.size)
        in_range = (query >= 0) & (query <= hi)
        out = np.full(query.shape, -1, dtype=np.int64)
        out[in_range] = table[query[in_range]]
        return out
    order = np.argsort(raw_ids, kind="stable")
    sorted_ids = raw_ids[order]
    pos = np.searchsorted(sorted_ids, query)
    pos_clipped = np.minimum(pos, sorted_ids.size - 1)
    found = sorted_ids[pos_clipped] == query
    return np.where(found, order[pos_clipped], -1).astype(np.int64)
