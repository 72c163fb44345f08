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

from contextlib import nullcontext

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys_assets.ml.arrays import lookup, top_k_indices, unique
from recsys_assets.ml.candidates import Rerank, block_candidates, exact_scores
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.workers import cpu_count, thread_map

__all__ = ["top_n", "TOPN_COLUMNS"]

TOPN_COLUMNS = ("user_id", "movie_id", "rank", "score")
# Extra float32 candidates per user beyond n, re-scored exactly (see block_candidates).
_CANDIDATE_MARGIN = 16


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
    item_bonus: np.ndarray | None = None,
    estimate_weight: float = 1.0,
    user_vectors: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
    n_threads: int | None = None,
) -> pd.DataFrame:
    """The ``n`` best unrated movies for each raw user id in ``users``.

    Movies are ranked by ``estimate_weight * estimate + item_bonus[i] + user_vectors[u] .
    item_vectors[i]`` (by the estimate alone by default); ``score`` is always the clipped SVD
    estimate, whatever the ranking. ``item_bonus`` and ``item_vectors`` are indexed like
    ``factors.raw_iids``; ``user_vectors`` rows follow ``np.unique(users)``. This is how the
    shipped blend and the popularity-only fallback rank (see ``recsys_assets.ml.ranking``).

    ``rated_users``/``rated_movies`` are parallel raw-id arrays of already-rated pairs
    (pairs with users not in ``users`` or movies unknown to the model are ignored). Users
    unknown to the model are scored with ``mu + bi``. ``users`` is de-duplicated; the
    result has columns ``user_id, movie_id, rank (1..n), score`` ordered by user id then
    rank, and holds fewer than ``n`` rows for a user with fewer unrated movies.
    Memory per block is O(block_size * n_movies); ``n_threads`` blocks (None: one per CPU)
    are ranked side by side, with the same result as one after another.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if item_bonus is not None:
        item_bonus = np.asarray(item_bonus, dtype=np.float64)
        if item_bonus.shape != (factors.n_items,):
            raise ValueError(
                f"item_bonus has shape {item_bonus.shape}, expected ({factors.n_items},)"
            )
    users = unique(np.asarray(users, dtype=np.int64))
    if (user_vectors is None) != (item_vectors is None):
        raise ValueError("user_vectors and item_vectors go together")
    if user_vectors is not None:
        if user_vectors.shape[0] != users.size or item_vectors.shape[0] != factors.n_items:
            raise ValueError(
                f"user_vectors {user_vectors.shape} / item_vectors {item_vectors.shape} do not "
                f"match {users.size} users / {factors.n_items} movies"
            )
        item_vectors_t = np.ascontiguousarray(np.asarray(item_vectors, dtype=np.float64).T)
    reranked = item_bonus is not None or estimate_weight != 1.0 or user_vectors is not None
    rated_users = np.asarray(rated_users, dtype=np.int64).ravel()
    rated_movies = np.asarray(rated_movies, dtype=np.int64).ravel()
    if rated_users.shape != rated_movies.shape:
        raise ValueError("rated_users and rated_movies must have the same length")
    n_items = factors.n_items
    if users.size == 0 or n_items == 0:
        return _empty_frame()

    # Rows of the mask are positions in `users` (not model inner ids) so users unknown to
    # the model still get their already-rated movies excluded. Built once for all blocks.
    row = lookup(users, rated_users)
    col = lookup(factors.raw_iids, rated_movies)
    keep = (row >= 0) & (col >= 0)
    rated = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.int8), (row[keep], col[keep])),
        shape=(users.size, n_items),
    )
    rated.sum_duplicates()

    inner_u = lookup(factors.raw_uids, users)  # -1 = unknown to the model
    bi = np.asarray(factors.bi, dtype=np.float64)
    item_base = factors.global_mean + bi  # what an unknown user gets: mu + bi
    qi_t = np.ascontiguousarray(factors.qi.T)
    raw_iids = factors.raw_iids
    k = min(n, n_items)

    # float32 copies for the candidate pass (half the bytes through BLAS and argpartition);
    # the reported scores and the final order always come from float64, as predict() does.
    m = k + _CANDIDATE_MARGIN
    fast = not reranked and m < n_items and np.asarray(factors.pu).dtype == np.float64
    if fast:
        pu32 = np.asarray(factors.pu, dtype=np.float32)
        qi32_t = np.ascontiguousarray(qi_t, dtype=np.float32)
        bi32 = bi.astype(np.float32)
        base32 = item_base.astype(np.float32)
        # Per-user bound on |float32 score - float64 score| (dot product error <= f * u *
        # sum |p_f| max|q_f|, plus the rounding of the bias terms), with a factor 4 to spare.
        n_f = factors.pu.shape[1] if factors.pu.ndim == 2 else 0
        qmax = np.abs(factors.qi).max(axis=0) if factors.qi.size else np.zeros(n_f)
        bias_mag = abs(factors.global_mean) + np.abs(bi).max(initial=0.0) + 1.0
        eps32 = float(np.finfo(np.float32).eps)
        user_tol = 4 * eps32 * ((n_f + 4) * (np.abs(factors.pu) @ qmax) + 8 * bias_mag)
        user_tol += 4 * eps32 * np.abs(factors.bu) * 8
        unknown_tol = 4 * eps32 * 8 * bias_mag
    # The same for a reranked order (the shipped blend): a float32 pass over every movie,
    # exact float64 keys for each row's m best; see `Rerank`.
    rerank = (
        Rerank.build(factors, users, estimate_weight, item_bonus, user_vectors, item_vectors, bi)
        if reranked and m < n_items and np.asarray(factors.pu).dtype == np.float64
        else None
    )

    def block(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        stop = min(start + block_size, users.size)
        b_inner = inner_u[start:stop]
        known = b_inner >= 0
        # Rated movies of this block's users, straight from the CSR arrays.
        lo, hi = rated.indptr[start], rated.indptr[stop]
        mask_rows = np.repeat(np.arange(stop - start), np.diff(rated.indptr[start : stop + 1]))
        mask_cols = rated.indices[lo:hi]

        if reranked and rerank is not None:
            idx, vals, valid, redo = rerank.candidates(
                start, stop, b_inner, mask_rows, mask_cols, k, m, raw_iids
            )
        elif fast:
            idx, vals, redo = block_candidates(
                factors,
                b_inner,
                known,
                pu32,
                qi32_t,
                bi32,
                base32,
                bi,
                mask_rows,
                mask_cols,
                k,
                m,
                raw_iids,
                np.where(known, user_tol[np.maximum(b_inner, 0)], unknown_tol),
            )
        else:
            redo = np.arange(stop - start)
            idx = np.zeros((stop - start, k), dtype=np.int64)
            vals = np.zeros((stop - start, k), dtype=np.float64)
            valid = np.zeros((stop - start, k), dtype=bool)
        if redo.size:
            # The exact float64 pass over all movies (rows the candidate pass can't vouch for).
            scores = exact_scores(factors, b_inner[redo], bi, item_base, qi_t)
            keys = scores
            if reranked:  # the blend's keys; `score` stays the estimate
                keys = scores * estimate_weight
                if item_bonus is not None:
                    keys += item_bonus
                if user_vectors is not None:
                    keys += user_vectors[start:stop][redo] @ item_vectors_t
            in_redo = np.full(stop - start, -1)
            in_redo[redo] = np.arange(redo.size)
            sel = in_redo[mask_rows] >= 0
            keys[in_redo[mask_rows[sel]], mask_cols[sel]] = -np.inf
            ridx = top_k_indices(keys, k, raw_iids)
            idx[redo] = ridx
            vals[redo] = np.take_along_axis(scores, ridx, axis=1)
            if reranked:
                valid[redo] = np.isfinite(np.take_along_axis(keys, ridx, axis=1))
            del scores, keys
        if not reranked:
            valid = np.isfinite(vals)  # -inf = rated; sorted last, so valid is a row prefix
        rows, pos = np.nonzero(valid)
        return (
            users[start:stop][rows],
            raw_iids[idx[rows, pos]],
            pos.astype(np.int64) + 1,
            np.clip(vals[rows, pos], factors.lower, factors.upper),
        )

    # Blocks side by side, each with one BLAS thread: the products were already on every
    # core, but the adds, masks and partitions around them ran on one.
    starts = range(0, users.size, block_size)
    threads = min(n_threads or cpu_count(), len(starts))
    one_blas_thread = threadpool_limits(limits=1, user_api="blas") if threads > 1 else nullcontext()
    with one_blas_thread:
        parts = thread_map(block, starts, threads)
    out_u, out_m, out_r, out_s = ([p[j] for p in parts] for j in range(4))

    return pd.DataFrame(
        {
            "user_id": np.concatenate(out_u),
            "movie_id": np.concatenate(out_m),
            "rank": np.concatenate(out_r),
            "score": np.concatenate(out_s).astype(np.float64, copy=False),
        }
    )
