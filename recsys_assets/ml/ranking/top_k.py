"""One ordered top-k, and the blend's lists by blocks of users with a float32 candidate pass.

Every list is ordered by (key desc, movie id asc) (``top_k_indices``). The blend's lists
(``blend_lists``, the SVD estimate alone included: weights (0, 0, 1)) would cost a float64
users x movies product; instead a float32 BLAS pass picks each row's ``k + margin`` best
candidates, whose keys are then recomputed exactly in float64 (``keys.blend_keys``), and
rows where float32 error could change the order are ranked again over every movie.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys_assets.ml.arrays import lookup
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.ranking.keys import blend_keys, estimates
from recsys_assets.ml.ranking.policy import RankingPolicy
from recsys_assets.ml.workers import cpu_count, thread_map

__all__ = ["LIST_COLUMNS", "blend_lists", "seen_matrix", "top_k_indices", "top_m_columns"]

LIST_COLUMNS = ("user_id", "movie_id", "rank", "score")
# Extra float32 candidates per user beyond k, re-scored exactly.
CANDIDATE_MARGIN = 16


def top_k_indices(scores: np.ndarray, k: int, raw_iids: np.ndarray) -> np.ndarray:
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


def top_m_columns(scores: np.ndarray, m: int) -> np.ndarray:
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


def seen_matrix(
    users: np.ndarray, raw_iids: np.ndarray, seen_users: np.ndarray, seen_movies: np.ndarray
) -> sp.csr_matrix:
    """Binary CSR (``users`` x catalogue) of seen pairs, indices sorted; rows are positions in
    ``users`` (not model ids), so users unknown to the model still skip what they saw."""
    row = lookup(users, np.asarray(seen_users, dtype=np.int64).ravel())
    col = lookup(raw_iids, np.asarray(seen_movies, dtype=np.int64).ravel())
    keep = (row >= 0) & (col >= 0)
    seen = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.int8), (row[keep], col[keep])),
        shape=(users.size, raw_iids.size),
    )
    seen.sum_duplicates()
    return seen


def block_mask(seen: sp.csr_matrix, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows within the block, catalogue columns) of the seen pairs of rows start..stop."""
    rows = np.repeat(np.arange(stop - start), np.diff(seen.indptr[start : stop + 1]))
    return rows, seen.indices[seen.indptr[start] : seen.indptr[stop]]


@dataclass(frozen=True)
class BlendRanking:
    """What every block of ``blend_lists`` reads: the policy's key inputs for these users."""

    factors: SVDFactors
    policy: RankingPolicy
    popularity: np.ndarray  # popularity feature per movie
    taste: np.ndarray | None  # unit taste vectors, rows follow the users (None: weight 0)
    item_unit: np.ndarray | None  # unit item factors (None: taste weight 0)

    def exact(self, inner: np.ndarray, taste: np.ndarray | None, qi_t: np.ndarray) -> tuple:
        """(estimates, keys) of these users (inner ids, -1 = unknown) for every movie."""
        est = estimates(self.factors, inner, qi_t)
        cos = taste @ self.item_unit.T if taste is not None else None
        return est, blend_keys(self.policy, est, self.popularity, cos)

    def tolerance(self, inner: np.ndarray) -> np.ndarray:
        """Per user, a bound on |float32 key - float64 key| of the candidate pass, 4x to spare.

        Dot product error <= (d + 4) * eps32 * sum_f |l_f| max|r_f| over the product's
        columns, plus the rounding of the constant terms."""
        f, w = self.factors, abs(self.policy.rating_weight)
        known = inner >= 0
        ku = np.maximum(inner, 0)
        qmax = np.abs(f.qi).max(axis=0) if f.qi.size else np.zeros(f.qi.shape[1])
        dot_mag = np.where(known, w * (np.abs(f.pu) @ qmax)[ku], 0.0)
        bu = np.where(known, np.abs(f.bu)[ku], 0.0)
        bi_max = np.abs(np.asarray(f.bi, dtype=np.float64)).max(initial=0.0)
        const_mag = w * (abs(f.global_mean) + bu + bi_max) + 1.0
        const_mag += abs(self.policy.popularity_weight) * np.abs(self.popularity).max(initial=0.0)
        width = f.qi.shape[1]
        if self.taste is not None:
            t = abs(self.policy.taste_weight)
            dot_mag = dot_mag + t * (np.abs(self.taste) @ np.abs(self.item_unit).max(axis=0))
            width += self.item_unit.shape[1]
        eps32 = float(np.finfo(np.float32).eps)
        return 4 * eps32 * ((width + 4) * dot_mag + 8 * const_mag)


@dataclass(frozen=True)
class CandidatePass:
    """The float32 pass: one BLAS product per block, ``[w * pu | t * taste] @ [qi | unit].T``,
    plus per-row and per-movie constants, picks each row's m best movies; their keys are then
    recomputed in float64 and the row is kept when its k-th exact key beats the m-th float32
    key by twice ``tol`` (``BlendRanking.tolerance``)."""

    blend: BlendRanking
    right32: np.ndarray  # (f + d, n_items) float32
    item_const32: np.ndarray  # w * bi + p * pop, float32
    tol: np.ndarray  # per position in the users

    @classmethod
    def build(cls, blend: BlendRanking, inner: np.ndarray) -> CandidatePass:
        f, p = blend.factors, blend.policy
        right = [np.asarray(f.qi, dtype=np.float32).T]
        if blend.taste is not None:
            right.append(blend.item_unit.astype(np.float32).T)
        bi = np.asarray(f.bi, dtype=np.float64)
        item_const = p.rating_weight * bi + p.popularity_weight * blend.popularity
        return cls(
            blend,
            np.ascontiguousarray(np.vstack(right)),
            item_const.astype(np.float32),
            blend.tolerance(inner),
        )

    def candidates(
        self, start: int, b_inner: np.ndarray, mask: tuple[np.ndarray, np.ndarray], k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """idx, estimates, valid (k columns each) and the rows to redo exactly, for a block."""
        b = self.blend
        f, w, stop = b.factors, b.policy.rating_weight, start + b_inner.size
        known = b_inner >= 0
        ku = np.maximum(b_inner, 0)
        left = [np.where(known[:, None], w * f.pu[ku], 0.0)]
        taste = b.taste[start:stop] if b.taste is not None else None
        if taste is not None:
            left.append(b.policy.taste_weight * taste)
        keys = np.hstack(left).astype(np.float32) @ self.right32
        keys += (w * (f.global_mean + np.where(known, f.bu[ku], 0.0))).astype(np.float32)[:, None]
        keys += self.item_const32
        keys[mask] = -np.inf
        cand = top_m_columns(keys, k + CANDIDATE_MARGIN)
        cand_keys32 = np.take_along_axis(keys, cand, axis=1)
        cand_min32 = cand_keys32.min(axis=1).astype(np.float64)
        del keys

        # Exact float64 estimates and keys of the candidates, as the full pass computes them.
        est = np.empty(cand.shape, dtype=np.float64)
        est[~known] = f.global_mean + np.asarray(f.bi, dtype=np.float64)[cand[~known]]
        if known.any():
            kb, kc = b_inner[known], cand[known]
            est[known] = (f.global_mean + f.bu[kb])[:, None] + f.bi[kc]
            est[known] += np.einsum("rf,rcf->rc", f.pu[kb], f.qi[kc])
        cos = np.einsum("rd,rcd->rc", taste, b.item_unit[cand]) if taste is not None else None
        exact = blend_keys(b.policy, est, b.popularity[cand], cos)
        exact[np.isneginf(cand_keys32)] = -np.inf

        order = np.lexsort((f.raw_iids[cand], -exact), axis=1)[:, :k]
        idx = np.take_along_axis(cand, order, axis=1)
        keys_k = np.take_along_axis(exact, order, axis=1)
        vals = np.take_along_axis(est, order, axis=1)
        # cand_min32 == -inf: fewer than m unseen movies, so every one of them is a candidate.
        tol = self.tol[start:stop]
        safe = np.isneginf(cand_min32) | (keys_k[:, k - 1] > cand_min32 + 2 * tol)
        return idx, vals, np.isfinite(keys_k), np.flatnonzero(~safe)


def blend_lists(
    blend: BlendRanking,
    users: np.ndarray,
    seen: sp.csr_matrix,
    n: int,
    block_size: int = 2048,
    n_threads: int | None = None,
) -> pd.DataFrame:
    """The blend's top-``n`` (``LIST_COLUMNS``) of ``users`` (sorted, unique raw ids; rows of
    ``seen`` and of ``blend.taste``): by user then rank, fewer rows for a user with fewer
    unseen movies. ``score``: the clipped estimate. Memory per block is O(block_size x movies);
    ``n_threads`` blocks (None: one per CPU) are ranked side by side, with the same result."""
    f = blend.factors
    inner_u = lookup(f.raw_uids, users)  # -1 = unknown to the model
    qi_t = np.ascontiguousarray(f.qi.T)
    k = min(n, f.n_items)
    fast = k + CANDIDATE_MARGIN < f.n_items and np.asarray(f.pu).dtype == np.float64
    candidates = CandidatePass.build(blend, inner_u) if fast else None

    def block(start: int) -> tuple[np.ndarray, ...]:
        stop = min(start + block_size, users.size)
        b_inner = inner_u[start:stop]
        mask = block_mask(seen, start, stop)
        if candidates is not None:
            idx, vals, valid, redo = candidates.candidates(start, b_inner, mask, k)
        else:
            redo = np.arange(stop - start)
            idx = np.zeros((redo.size, k), dtype=np.int64)
            vals = np.zeros((redo.size, k), dtype=np.float64)
            valid = np.zeros((redo.size, k), dtype=bool)
        if redo.size:  # rows the candidate pass can't vouch for: every movie, in float64
            taste = blend.taste[start:stop][redo] if blend.taste is not None else None
            est, keys = blend.exact(b_inner[redo], taste, qi_t)
            in_redo = np.full(stop - start, -1)
            in_redo[redo] = np.arange(redo.size)
            sel = in_redo[mask[0]] >= 0
            keys[in_redo[mask[0][sel]], mask[1][sel]] = -np.inf
            ridx = top_k_indices(keys, k, f.raw_iids)
            idx[redo] = ridx
            vals[redo] = np.take_along_axis(est, ridx, axis=1)
            valid[redo] = np.isfinite(np.take_along_axis(keys, ridx, axis=1))
        rows, pos = np.nonzero(valid)
        score = np.clip(vals[rows, pos], f.lower, f.upper)
        return users[start:stop][rows], f.raw_iids[idx[rows, pos]], pos + 1, score

    return list_frame(_blocks_side_by_side(block, range(0, users.size, block_size), n_threads))


def _blocks_side_by_side(block, starts: range, n_threads: int | None) -> list:
    # Each block with one BLAS thread: the products were already on every core, but the
    # adds, masks and partitions around them ran on one.
    threads = min(n_threads or cpu_count(), len(starts))
    one_blas_thread = threadpool_limits(limits=1, user_api="blas") if threads > 1 else nullcontext()
    with one_blas_thread:
        return thread_map(block, starts, threads)


def list_frame(parts: list[tuple[np.ndarray, ...]]) -> pd.DataFrame:
    """``LIST_COLUMNS`` from (users, movies, ranks, scores) parts."""
    dtypes = (np.int64, np.int64, np.int64, np.float64)
    columns = [
        np.concatenate([p[j] for p in parts]).astype(dtypes[j], copy=False)
        if parts
        else np.zeros(0, dtype=dtypes[j])
        for j in range(4)
    ]
    return pd.DataFrame(dict(zip(LIST_COLUMNS, columns, strict=True)))
