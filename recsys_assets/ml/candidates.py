"""The float32 candidate passes of `top_n`: cheap BLAS scores pick a few candidates per user,
whose keys are then recomputed exactly in float64 (rows where float32 error could change the
order are redone exactly by the caller)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_assets.ml.arrays import lookup
from recsys_assets.ml.factors import SVDFactors

__all__ = ["Rerank", "block_candidates", "exact_scores", "top_m_columns"]


def exact_scores(
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


def block_candidates(
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
    cand = top_m_columns(scores, m)
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
class Rerank:
    """Float32 candidate pass for a reranked order: keys = w * estimate + bonus + u . v.

    One float32 BLAS product per block, ``[w * pu | u] @ [qi | v].T``, plus per-row and
    per-movie constants, picks each row's m best movies; their keys are recomputed in
    float64 in the full pass's order of operations and the row is kept when its k-th exact
    key beats the m-th float32 key by twice ``tol`` (a bound on the float32 error of the
    row's keys, 4x to spare), as `block_candidates` does for the estimate alone.
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
    ) -> Rerank:
        w = float(weight)
        bonus = np.zeros(factors.n_items) if bonus is None else bonus
        right = [np.asarray(factors.qi, dtype=np.float32).T]
        if item_vectors is not None:
            item_vectors = np.asarray(item_vectors, dtype=np.float64)
            user_vectors = np.asarray(user_vectors, dtype=np.float64)
            right.append(item_vectors.astype(np.float32).T)
        right32 = np.ascontiguousarray(np.vstack(right))
        inner = lookup(factors.raw_uids, users)
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
        cand = top_m_columns(keys, m)
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
