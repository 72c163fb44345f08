"""Vectorized top-N recommendations from a fitted ``surprise.SVD``.

The old system called ``model.predict(u, i)`` once per (user, movie) pair (~90K pairs/s).
Here the factors are pulled out once (``SVDFactors.from_svd``) and whole blocks of users
are scored with one matrix product, which gives the same numbers as ``predict``:

* known user:   ``clip(mu + bu[u] + bi[i] + qi[i] . pu[u], lower, upper)``
* unknown user: ``clip(mu + bi[i], lower, upper)`` (biased SVD drops bu and the dot product)

Candidates are the movies known to the model; movies the user has already rated are
excluded. Ranking uses the unclipped estimate (clipping would create artificial ties at
the top of the scale), ties broken by ascending movie id; the reported score is clipped,
exactly as ``predict(...).est``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["SVDFactors", "top_n", "score_pairs", "TOPN_COLUMNS"]

TOPN_COLUMNS = ("user_id", "movie_id", "rank", "score")
# Pairs per gather in score_pairs / training error: bounds the temporary factor rows.
_PAIR_CHUNK = 65_536


def _raw_ids_to_int64(raw2inner: dict, kind: str) -> np.ndarray:
    """Invert surprise's raw->inner dict into an int64 array indexed by inner id."""
    out = np.empty(len(raw2inner), dtype=np.int64)
    for raw, inner in raw2inner.items():
        # load_from_df stores plain Python ints (numpy ints on other pandas versions);
        # anything else (strings, floats) would silently mis-map, so refuse it.
        if isinstance(raw, bool) or not isinstance(raw, (int, np.integer)):
            raise TypeError(f"raw {kind} id {raw!r} is not an integer; top_n needs int ids")
        out[inner] = raw
    return out


@dataclass
class SVDFactors:
    """Everything ``SVD.predict`` needs, as plain arrays indexed by surprise inner ids."""

    global_mean: float
    bu: np.ndarray  # (n_users,)
    bi: np.ndarray  # (n_items,)
    pu: np.ndarray  # (n_users, n_factors), float32 or float64
    qi: np.ndarray  # (n_items, n_factors)
    raw_uids: np.ndarray  # int64, inner user id -> raw user id
    raw_iids: np.ndarray  # int64, inner item id -> raw movie id
    lower: float  # trainset.rating_scale, used by predict() for clipping
    upper: float

    @classmethod
    def from_svd(cls, model: object) -> SVDFactors:
        """Extract factors from a fitted (biased) ``surprise.SVD``."""
        from surprise import SVD

        if not isinstance(model, SVD):
            raise TypeError(f"expected a surprise.SVD, got {type(model).__name__}")
        if getattr(model, "trainset", None) is None or not hasattr(model, "pu"):
            raise ValueError("SVD model is not fitted")
        if not model.biased:
            # Unbiased SVD predicts the global mean for unknown users and no biases for
            # known ones; not used by this project, so fail loudly rather than mis-score.
            raise ValueError("top_n supports biased SVD only (SVD(biased=True))")
        ts = model.trainset
        lower, upper = ts.rating_scale
        return cls(
            global_mean=float(ts.global_mean),
            bu=np.asarray(model.bu, dtype=np.float64),
            bi=np.asarray(model.bi, dtype=np.float64),
            pu=np.asarray(model.pu),
            qi=np.asarray(model.qi),
            raw_uids=_raw_ids_to_int64(ts._raw2inner_id_users, "user"),
            raw_iids=_raw_ids_to_int64(ts._raw2inner_id_items, "movie"),
            lower=float(lower),
            upper=float(upper),
        )

    @property
    def n_users(self) -> int:
        return int(self.raw_uids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.raw_iids.shape[0])


def _lookup(raw_ids: np.ndarray, query: np.ndarray) -> np.ndarray:
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


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.array([], dtype=np.int64),
            "movie_id": np.array([], dtype=np.int64),
            "rank": np.array([], dtype=np.int64),
            "score": np.array([], dtype=np.float64),
        }
    )


def top_n(
    factors: SVDFactors,
    users: np.ndarray,
    rated_users: np.ndarray,
    rated_movies: np.ndarray,
    n: int = 50,
    block_size: int = 2048,
) -> pd.DataFrame:
    """The ``n`` best unrated movies for each raw user id in ``users``.

    ``rated_users``/``rated_movies`` are parallel raw-id arrays of already-rated pairs
    (pairs with users not in ``users`` or movies unknown to the model are ignored). Users
    unknown to the model are scored with ``mu + bi``. ``users`` is de-duplicated; the
    result has columns ``user_id, movie_id, rank (1..n), score`` ordered by user id then
    rank, and holds fewer than ``n`` rows for a user with fewer unrated movies.
    Memory per block is O(block_size * n_movies).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    users = np.unique(np.asarray(users, dtype=np.int64).ravel())
    rated_users = np.asarray(rated_users, dtype=np.int64).ravel()
    rated_movies = np.asarray(rated_movies, dtype=np.int64).ravel()
    if rated_users.shape != rated_movies.shape:
        raise ValueError("rated_users and rated_movies must have the same length")
    n_items = factors.n_items
    if users.size == 0 or n_items == 0:
        return _empty_frame()

    # Rows of the mask are positions in `users` (not model inner ids) so users unknown to
    # the model still get their already-rated movies excluded. Built once for all blocks.
    row = _lookup(users, rated_users)
    col = _lookup(factors.raw_iids, rated_movies)
    keep = (row >= 0) & (col >= 0)
    rated = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.int8), (row[keep], col[keep])),
        shape=(users.size, n_items),
    )
    rated.sum_duplicates()

    inner_u = _lookup(factors.raw_uids, users)  # -1 = unknown to the model
    bi = np.asarray(factors.bi, dtype=np.float64)
    item_base = factors.global_mean + bi  # what an unknown user gets: mu + bi
    qi_t = np.ascontiguousarray(factors.qi.T)
    raw_iids = factors.raw_iids
    k = min(n, n_items)

    out_u, out_m, out_r, out_s = [], [], [], []
    for start in range(0, users.size, block_size):
        stop = min(start + block_size, users.size)
        b_inner = inner_u[start:stop]
        known = b_inner >= 0
        # Same association order as SVD.estimate, ((mu + bu) + bi) + dot, so the floats
        # match predict() to the last bit or two. (Float addition is commutative, so the
        # in-place `+=` of the dot product below does not change the result.)
        if known.all():  # the common case: no fancy-index copies
            scores = (factors.global_mean + factors.bu[b_inner])[:, None] + bi
            scores += factors.pu[b_inner] @ qi_t
        else:
            scores = np.empty((stop - start, n_items), dtype=np.float64)
            scores[~known] = item_base
            if known.any():
                ku = b_inner[known]
                part = (factors.global_mean + factors.bu[ku])[:, None] + bi
                part += factors.pu[ku] @ qi_t
                scores[known] = part

        # Rated movies of this block's users, straight from the CSR arrays.
        lo, hi = rated.indptr[start], rated.indptr[stop]
        mask_rows = np.repeat(np.arange(stop - start), np.diff(rated.indptr[start : stop + 1]))
        scores[mask_rows, rated.indices[lo:hi]] = -np.inf

        idx = _top_k_indices(scores, k, raw_iids)
        vals = np.take_along_axis(scores, idx, axis=1)
        valid = np.isfinite(vals)  # -inf = rated; sorted last, so valid is a row prefix
        rows, pos = np.nonzero(valid)
        out_u.append(users[start:stop][rows])
        out_m.append(raw_iids[idx[rows, pos]])
        out_r.append(pos.astype(np.int64) + 1)
        out_s.append(np.clip(vals[rows, pos], factors.lower, factors.upper))

    return pd.DataFrame(
        {
            "user_id": np.concatenate(out_u),
            "movie_id": np.concatenate(out_m),
            "rank": np.concatenate(out_r),
            "score": np.concatenate(out_s).astype(np.float64, copy=False),
        }
    )


def _top_k_indices(scores: np.ndarray, k: int, raw_iids: np.ndarray) -> np.ndarray:
    """Column indices of each row's k best scores, ordered by (score desc, movie id asc)."""
    n_rows, n_items = scores.shape
    if k < n_items:
        # argpartition is O(n_items) per row but picks arbitrarily among values tied with
        # the k-th best; rows where such a tie straddles the cut are redone exactly below.
        idx = np.argpartition(scores, n_items - k, axis=1)[:, n_items - k :]
        kth = np.take_along_axis(scores, idx, axis=1).min(axis=1)
        n_ge = (scores >= kth[:, None]).sum(axis=1)
        # kth == -inf means fewer than k unrated movies: every finite one is already in.
        ambiguous = np.nonzero((n_ge > k) & np.isfinite(kth))[0]
        for r in ambiguous:
            idx[r] = np.lexsort((raw_iids, -scores[r]))[:k]
    else:
        idx = np.broadcast_to(np.arange(n_items), (n_rows, n_items))
    vals = np.take_along_axis(scores, idx, axis=1)
    order = np.lexsort((raw_iids[idx], -vals), axis=1)
    return np.take_along_axis(idx, order, axis=1)


def score_pairs(factors: SVDFactors, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """``model.predict(u, i).est`` for parallel arrays of raw ids, vectorized.

    Unknown users or movies lose their bias (and the dot product), as in ``SVD.estimate``.
    """
    u = _lookup(factors.raw_uids, np.asarray(users, dtype=np.int64).ravel())
    i = _lookup(factors.raw_iids, np.asarray(movies, dtype=np.int64).ravel())
    ku, ki = u >= 0, i >= 0
    est = np.full(u.shape, factors.global_mean, dtype=np.float64)
    est[ku] += factors.bu[u[ku]]
    est[ki] += np.asarray(factors.bi, dtype=np.float64)[i[ki]]
    both = np.flatnonzero(ku & ki)
    # In chunks: gathering pu/qi rows for all pairs at once costs 2 x 8 x n_factors bytes per
    # pair (16 GB for a 25M-rating test set); a chunk bounds it to ~100 MB.
    for start in range(0, both.size, _PAIR_CHUNK):
        rows = both[start : start + _PAIR_CHUNK]
        est[rows] += np.einsum("ij,ij->i", factors.pu[u[rows]], factors.qi[i[rows]])
    return np.clip(est, factors.lower, factors.upper)
