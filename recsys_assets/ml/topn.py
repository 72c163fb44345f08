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
# Extra float32 candidates per user beyond n, re-scored exactly (see _block_candidates).
_CANDIDATE_MARGIN = 16
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

    @classmethod
    def from_arrays(
        cls,
        global_mean: float,
        bu: np.ndarray,
        bi: np.ndarray,
        pu: np.ndarray,
        qi: np.ndarray,
        raw2inner_users: dict,
        raw2inner_items: dict,
        rating_scale: tuple[float, float],
    ) -> SVDFactors:
        """Factors of any ``mu + bu + bi (+ pu . qi)`` model (e.g. BaselineOnly with rank 0)."""
        lower, upper = rating_scale
        return cls(
            global_mean=float(global_mean),
            bu=np.asarray(bu, dtype=np.float64),
            bi=np.asarray(bi, dtype=np.float64),
            pu=np.asarray(pu),
            qi=np.asarray(qi),
            raw_uids=_raw_ids_to_int64(raw2inner_users, "user"),
            raw_iids=_raw_ids_to_int64(raw2inner_items, "movie"),
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
    item_bonus: np.ndarray | None = None,
    estimate_weight: float = 1.0,
    user_vectors: np.ndarray | None = None,
    item_vectors: np.ndarray | None = None,
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
    Memory per block is O(block_size * n_movies).
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
    users = np.unique(np.asarray(users, dtype=np.int64).ravel())
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
    # exact float64 keys for each row's m best; see `_Rerank`.
    rerank = (
        _Rerank.build(factors, users, estimate_weight, item_bonus, user_vectors, item_vectors, bi)
        if reranked and m < n_items and np.asarray(factors.pu).dtype == np.float64
        else None
    )

    out_u, out_m, out_r, out_s = [], [], [], []
    for start in range(0, users.size, block_size):
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
            idx, vals, redo = _block_candidates(
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
            scores = _exact_scores(factors, b_inner[redo], bi, item_base, qi_t)
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
            ridx = _top_k_indices(keys, k, raw_iids)
            idx[redo] = ridx
            vals[redo] = np.take_along_axis(scores, ridx, axis=1)
            if reranked:
                valid[redo] = np.isfinite(np.take_along_axis(keys, ridx, axis=1))
            del scores, keys
        if not reranked:
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


def _exact_scores(
    factors: SVDFactors,
    b_inner: np.ndarray,
    bi: np.ndarray,
    item_base: np.ndarray,
    qi_t: np.ndarray,
) -> np.ndarray:
    """float64 scores of these users (inner ids, -1 = unknown) for every movie."""
    known = b_inner >= 0
    # Same association order as SVD.estimate, ((mu + bu) + bi) + dot, so the floats
    # match predict() to the last bit or two.
    if known.all():  # the common case: no fancy-index copies
        scores = (factors.global_mean + factors.bu[b_inner])[:, None] + bi
        scores += factors.pu[b_inner] @ qi_t
        return scores
    scores = np.empty((b_inner.size, bi.size), dtype=np.float64)
    scores[~known] = item_base
    if known.any():
        ku = b_inner[known]
        part = (factors.global_mean + factors.bu[ku])[:, None] + bi
        part += factors.pu[ku] @ qi_t
        scores[known] = part
    return scores


def _block_candidates(
    factors: SVDFactors,
    b_inner: np.ndarray,
    known: np.ndarray,
    pu32: np.ndarray,
    qi32_t: np.ndarray,
    bi32: np.ndarray,
    base32: np.ndarray,
    bi: np.ndarray,
    mask_rows: np.ndarray,
    mask_cols: np.ndarray,
    k: int,
    m: int,
    raw_iids: np.ndarray,
    tol: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k by a float32 pass over all movies, re-scored exactly in float64.

    The float32 pass keeps each row's m = k + margin best candidates; they are re-scored in
    float64 and ordered by (score desc, movie id asc). A row is exact when its k-th exact
    score beats every non-candidate's float64 score, which is at most the m-th float32
    score + tol; rows where that is not certain (near-ties across the cut) are returned in
    `redo` for the full float64 pass.
    """
    n_rows = b_inner.size
    if known.all():
        # The common case, in place: one BLAS call, two broadcast adds, no temporaries.
        scores = pu32[b_inner] @ qi32_t
        scores += (factors.global_mean + factors.bu[b_inner]).astype(np.float32)[:, None]
        scores += bi32
    else:
        scores = np.empty((n_rows, qi32_t.shape[1]), dtype=np.float32)
        scores[~known] = base32
        if known.any():
            ku = b_inner[known]
            part = (factors.global_mean + factors.bu[ku]).astype(np.float32)[:, None] + bi32
            part += pu32[ku] @ qi32_t
            scores[known] = part
    scores[mask_rows, mask_cols] = -np.inf
    cand = _top_m_columns(scores, m)
    cand_min32 = np.take_along_axis(scores, cand, axis=1).min(axis=1).astype(np.float64)
    rated_cand = np.isneginf(np.take_along_axis(scores, cand, axis=1))
    del scores

    # Exact float64 scores of the candidates, in predict()'s association order.
    exact = np.empty(cand.shape, dtype=np.float64)
    exact[~known] = factors.global_mean + bi[cand[~known]]
    if known.any():
        ku = b_inner[known]
        kc = cand[known]
        exact[known] = (factors.global_mean + factors.bu[ku])[:, None] + bi[kc]
        exact[known] += np.einsum("rf,rcf->rc", factors.pu[ku], factors.qi[kc])
    exact[rated_cand] = -np.inf

    order = np.lexsort((raw_iids[cand], -exact), axis=1)[:, :k]
    idx = np.take_along_axis(cand, order, axis=1)
    vals = np.take_along_axis(exact, order, axis=1)
    kth = vals[:, k - 1]
    # cand_min32 == -inf: fewer than m unrated movies, so every one of them is a candidate.
    safe = np.isneginf(cand_min32) | (kth > cand_min32 + 2 * tol)
    return idx, vals, np.flatnonzero(~safe)


@dataclass
class _Rerank:
    """Float32 candidate pass for a reranked order: keys = w * estimate + bonus + u . v.

    One float32 BLAS product per block, ``[w * pu | u] @ [qi | v].T``, plus per-row and
    per-movie constants, picks each row's m best movies; their keys are recomputed in
    float64 in the full pass's order of operations and the row is kept when its k-th exact
    key beats the m-th float32 key by twice ``tol`` (a bound on the float32 error of the
    row's keys, 4x to spare), as `_block_candidates` does for the estimate alone.
    """

    factors: SVDFactors
    weight: float
    bonus: np.ndarray  # float64 per movie (zeros without a bonus)
    user_vectors: np.ndarray | None  # rows follow `users`
    item_vectors: np.ndarray | None
    right32: np.ndarray  # (f + d, n_items) float32
    item_const32: np.ndarray  # w * bi + bonus, float32
    tol: np.ndarray  # per position in `users`

    @classmethod
    def build(
        cls,
        factors: SVDFactors,
        users: np.ndarray,
        weight: float,
        bonus: np.ndarray | None,
        user_vectors: np.ndarray | None,
        item_vectors: np.ndarray | None,
        bi: np.ndarray,
    ) -> _Rerank:
        w = float(weight)
        bonus = np.zeros(factors.n_items) if bonus is None else bonus
        right = [np.asarray(factors.qi, dtype=np.float32).T]
        if item_vectors is not None:
            item_vectors = np.asarray(item_vectors, dtype=np.float64)
            user_vectors = np.asarray(user_vectors, dtype=np.float64)
            right.append(item_vectors.astype(np.float32).T)
        right32 = np.ascontiguousarray(np.vstack(right))
        inner = _lookup(factors.raw_uids, users)
        known = inner >= 0
        qmax = np.abs(factors.qi).max(axis=0)
        dot_mag = np.where(known, abs(w) * (np.abs(factors.pu) @ qmax)[np.maximum(inner, 0)], 0)
        bu = np.where(known, np.abs(factors.bu)[np.maximum(inner, 0)], 0.0)
        const_mag = abs(w) * (abs(factors.global_mean) + bu + np.abs(bi).max(initial=0.0))
        const_mag += np.abs(bonus).max(initial=0.0) + 1.0
        if item_vectors is not None:
            dot_mag = dot_mag + np.abs(user_vectors) @ np.abs(item_vectors).max(axis=0)
        eps32 = float(np.finfo(np.float32).eps)
        tol = 4 * eps32 * ((right32.shape[0] + 4) * dot_mag + 8 * const_mag)
        return cls(
            factors,
            w,
            bonus,
            user_vectors,
            item_vectors,
            right32,
            (w * bi + bonus).astype(np.float32),
            tol,
        )

    def candidates(
        self,
        start: int,
        stop: int,
        b_inner: np.ndarray,
        mask_rows: np.ndarray,
        mask_cols: np.ndarray,
        k: int,
        m: int,
        raw_iids: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """idx, scores, valid (k columns each) and the rows to redo exactly, for one block."""
        f, w = self.factors, self.weight
        known = b_inner >= 0
        ku = np.maximum(b_inner, 0)
        left = [np.where(known[:, None], w * f.pu[ku], 0.0)]
        if self.user_vectors is not None:
            left.append(self.user_vectors[start:stop])
        keys = np.hstack(left).astype(np.float32) @ self.right32
        row_const = w * (f.global_mean + np.where(known, f.bu[ku], 0.0))
        keys += row_const.astype(np.float32)[:, None]
        keys += self.item_const32
        keys[mask_rows, mask_cols] = -np.inf
        cand = _top_m_columns(keys, m)
        cand_keys32 = np.take_along_axis(keys, cand, axis=1)
        cand_min32 = cand_keys32.min(axis=1).astype(np.float64)
        rated_cand = np.isneginf(cand_keys32)
        del keys

        # Exact float64 estimates and keys of the candidates, in the full pass's order.
        scores = np.empty(cand.shape, dtype=np.float64)
        scores[~known] = f.global_mean + np.asarray(f.bi, dtype=np.float64)[cand[~known]]
        if known.any():
            kb, kc = b_inner[known], cand[known]
            scores[known] = (f.global_mean + f.bu[kb])[:, None] + f.bi[kc]
            scores[known] += np.einsum("rf,rcf->rc", f.pu[kb], f.qi[kc])
        exact = scores * w
        exact += self.bonus[cand]
        if self.user_vectors is not None:
            exact += np.einsum("rd,rcd->rc", self.user_vectors[start:stop], self.item_vectors[cand])
        exact[rated_cand] = -np.inf

        order = np.lexsort((raw_iids[cand], -exact), axis=1)[:, :k]
        idx = np.take_along_axis(cand, order, axis=1)
        keys_k = np.take_along_axis(exact, order, axis=1)
        vals = np.take_along_axis(scores, order, axis=1)
        tol = self.tol[start:stop]
        # cand_min32 == -inf: fewer than m unrated movies, so every one of them is a candidate.
        safe = np.isneginf(cand_min32) | (keys_k[:, k - 1] > cand_min32 + 2 * tol)
        return idx, vals, np.isfinite(keys_k), np.flatnonzero(~safe)


def _top_m_columns(scores: np.ndarray, m: int) -> np.ndarray:
    """Column indices of each row's m largest values (in no particular order).

    Same set as `argpartition(scores, -m)[:, -m:]` up to ties at the cut, but cheaper on wide
    rows: the m-th best of a strided column sample is a lower bound for the row's m-th best,
    so only the columns at or above it (a few thousand of 59K) go through argpartition.
    """
    n_rows, n_items = scores.shape
    stride = n_items // (32 * m)
    if stride < 4:
        return np.argpartition(scores, n_items - m, axis=1)[:, n_items - m :]
    sample = scores[:, ::stride]
    threshold = np.partition(sample, sample.shape[1] - m, axis=1)[:, sample.shape[1] - m]
    keep = scores >= threshold[:, None]
    counts = keep.sum(axis=1)
    width = int(counts.max())
    if width > n_items // 4:  # a flat row (e.g. -inf threshold): not worth packing
        return np.argpartition(scores, n_items - m, axis=1)[:, n_items - m :]
    rows, cols = np.nonzero(keep)  # row-major, so grouped by row
    del keep
    pos = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    packed = np.full((n_rows, width), -np.inf, dtype=scores.dtype)
    packed_cols = np.zeros((n_rows, width), dtype=np.int64)
    packed[rows, pos] = scores[rows, cols]
    packed_cols[rows, pos] = cols
    # Every row has >= m real entries >= its threshold, so padding is never picked.
    part = np.argpartition(packed, width - m, axis=1)[:, width - m :]
    return np.take_along_axis(packed_cols, part, axis=1)


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
        est[rows] += (factors.pu[u[rows]] * factors.qi[i[rows]]).sum(axis=1)
    return np.clip(est, factors.lower, factors.upper)
