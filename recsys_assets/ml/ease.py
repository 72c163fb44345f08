"""EASE (Steck 2019): a closed-form item-item ranking model trained on implicit feedback.

A rating is an interaction (its value is ignored): ``X`` is the binary users x movies matrix.
EASE learns the item-item weights ``B`` minimising ``||X - XB||² + λ||B||²`` with ``diag(B) = 0``,
whose solution is

    P = (XᵀX + λI)⁻¹,   B = I - P · diag(1 / diag(P))   (so B[i, j] = -P[i, j] / P[j, j], j ≠ i)

and a user's score for movie ``j`` is ``X_u · B[:, j]``: the sum of the rows of ``B`` of the
movies the user rated. On MovieLens 100K it ranks held-out movies about twice as well as the
SVD blend (see the README).

Memory: ``P`` is dense (items x items), so EASE is fitted on the ``max_items`` most-rated movies
(a 59K-movie catalogue would need 28 GB in float64; the 10K most-rated movies of MovieLens 25M
carry ~95% of its ratings). Movies outside that set are never preferred to a kept one: they
rank after every kept movie, by popularity (``catalogue_keys``).

Every path that ranks with EASE (cross-validation, ``user_predictions``, serving) computes the
scores with ``scores_of`` — one sparse x dense product with the rated movies in ascending order
— so the float32 sums, and therefore the lists, are identical everywhere.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from recsys_assets.ml.arrays import lookup
from recsys_assets.ml.svd_sgd import njit_cached
from recsys_assets.ml.workers import cpu_count, fork_map, runs_inline

__all__ = [
    "DEFAULT_LAMBDAS",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MIN_ITEM_RATINGS",
    "EASEModel",
    "NOT_KEPT_FLOOR",
    "fit_ease",
    "fit_ease_path",
    "gram",
    "weights_from_gram",
    "kept_items",
    "map_ease_path",
]

# Candidate λ values, chosen on validation ratings (the search's V, or each fold's own). 100
# was never chosen on the data measured (MovieLens 100K, 5M and 25M generated; every choice
# the same without it, docs/benchmarks.md), and 4 λ are two rounds of 2 forked solves where
# 5 needed a third solve at 10,000 movies.
DEFAULT_LAMBDAS: tuple[float, ...] = (250.0, 500.0, 1000.0, 2000.0)
# Most-rated movies EASE is fitted on: bounded by the dense items x items solve
# (10K: 0.8 GB per float64 matrix; see the README for measured fit times).
DEFAULT_MAX_ITEMS = 10_000
# Movies with fewer ratings are left out of EASE (ranked after its movies, by popularity):
# at λ in the hundreds their weights are all but zero, while a long tail of movies rated once
# or twice makes the dense solve cubically slower. On MovieLens 100K (two 75/25 splits), the
# floor 5 keeps 1.3K of 1.65K movies, halves the solve, and moves NDCG@10 by under 0.001.
DEFAULT_MIN_ITEM_RATINGS = 5
# Keys of movies outside the kept set: below any EASE score, ordered among themselves by
# popularity (in [0, 1]). EASE scores are sums of a user's rows of B, far above -1e6.
NOT_KEPT_FLOOR = -1e6
KIND = "ease"

R = TypeVar("R")


@dataclass
class EASEModel:
    """EASE's item-item weights over its kept movies; rows and columns follow ``raw_iids``."""

    raw_iids: np.ndarray  # int64, sorted: the kept movies
    weights: np.ndarray  # (n, n) float32 B, zero diagonal
    lam: float
    n_ratings: int  # interactions it was fitted on (distinct user-movie pairs)
    n_users: int

    @property
    def n_items(self) -> int:
        return int(self.raw_iids.size)

    def describe(self) -> dict:
        """What the manifest records about the model (the weights are in the pickle)."""
        return {
            "kind": KIND,
            "lambda": float(self.lam),
            "items": self.n_items,
            "interactions": int(self.n_ratings),
            "users": int(self.n_users),
        }

    def scores_of(self, rated: sp.csr_matrix) -> np.ndarray:
        """float32 scores of the kept movies for each row of ``rated`` (binary, kept columns).

        ``rated`` must have sorted column indices (``rated_rows`` builds it): the products then
        add the same rows of B in the same order for one user as for a block of users.
        """
        return np.asarray(rated @ self.weights)  # weights are C-ordered (weights_from_gram)

    def rated_rows(self, users: np.ndarray, rated_users: np.ndarray, rated_movies: np.ndarray):
        """Binary float32 CSR (``users`` x kept movies) of the rated pairs, indices sorted."""
        row = lookup(users, np.asarray(rated_users, dtype=np.int64))
        col = lookup(self.raw_iids, np.asarray(rated_movies, dtype=np.int64))
        keep = (row >= 0) & (col >= 0)
        m = sp.csr_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32), (row[keep], col[keep])),
            shape=(users.size, self.n_items),
        )
        m.sum_duplicates()  # sorts indices too
        m.data[:] = 1.0
        return m

    def catalogue_keys(
        self, scores: np.ndarray, catalogue: np.ndarray, popularity: np.ndarray
    ) -> np.ndarray:
        """Ranking keys over ``catalogue`` (raw movie ids, e.g. the SVD's), float64.

        Kept movies: their EASE score; the others ``NOT_KEPT_FLOOR + popularity``, so they only
        fill lists longer than the kept movies a user has not rated. ``scores``: (rows, kept).
        """
        pos = lookup(self.raw_iids, np.asarray(catalogue, dtype=np.int64))
        inside = pos >= 0
        keys = np.empty((scores.shape[0], catalogue.size), dtype=np.float64)
        keys[:, ~inside] = NOT_KEPT_FLOOR + np.asarray(popularity, dtype=np.float64)[~inside]
        keys[:, inside] = scores[:, pos[inside]]
        return keys


def kept_items(movies: np.ndarray, max_items: int | None, min_ratings: int = 1) -> np.ndarray:
    """The ``max_items`` most-rated movie ids with at least ``min_ratings`` ratings (ties by
    lower id), sorted by id."""
    ids, counts = np.unique(np.asarray(movies, dtype=np.int64), return_counts=True)
    if min_ratings > 1:
        ids, counts = ids[counts >= min_ratings], counts[counts >= min_ratings]
    if max_items is not None and ids.size > max_items:
        ids = ids[np.lexsort((ids, -counts))[:max_items]]
    return np.sort(ids)


def gram(
    users: np.ndarray,
    movies: np.ndarray,
    max_items: int | None = DEFAULT_MAX_ITEMS,
    dtype: type = np.float64,
    min_ratings: int = 1,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``XᵀX`` over the kept movies (dense), the kept ids, interactions and users counted."""
    users = np.asarray(users, dtype=np.int64)
    kept = kept_items(movies, max_items, min_ratings)
    col = lookup(kept, np.asarray(movies, dtype=np.int64))
    keep = col >= 0
    uids, row = np.unique(users[keep], return_inverse=True)
    x = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (row.ravel(), col[keep])),
        shape=(uids.size, kept.size),
    )
    x.sum_duplicates()  # a movie rated twice by a user is one interaction; indices sorted
    by_item = x.tocsc()
    by_item.sort_indices()
    g = np.zeros((kept.size, kept.size), dtype=dtype)
    # Counted in a compiled loop (exact integers): scipy's sparse product took minutes at 25M
    # ratings. Row by row: each row of G stays in cache while every user of its movie adds to
    # it, about twice as fast as adding each user's pairs across the rows.
    gram_kernel()(
        x.indptr.astype(np.int64),
        x.indices.astype(np.int64),
        by_item.indptr.astype(np.int64),
        by_item.indices.astype(np.int64),
        g,
    )
    return g, kept, int(x.nnz), int(uids.size)


def _gram_rows(
    u_indptr: np.ndarray,
    u_movies: np.ndarray,
    m_indptr: np.ndarray,
    m_users: np.ndarray,
    g: np.ndarray,
) -> None:
    """``g = XᵀX`` (``g`` zeroed) for a binary ``X`` given by user (CSR, movies sorted) and by
    movie (CSC): row ``i`` gets, from each user of movie ``i``, 1 at each of the user's movies
    ``j >= i``; the lower half is mirrored in cache-sized blocks."""
    n = g.shape[0]
    for i in range(n):
        row = g[i]
        for p in range(m_indptr[i], m_indptr[i + 1]):
            u = m_users[p]
            lo = u_indptr[u]
            hi = u_indptr[u + 1]
            while lo < hi:  # the user's first movie >= i (binary search)
                mid = (lo + hi) >> 1
                if u_movies[mid] < i:
                    lo = mid + 1
                else:
                    hi = mid
            for q in range(lo, u_indptr[u + 1]):
                row[u_movies[q]] += 1.0
    block = 64
    for i0 in range(0, n, block):
        for j0 in range(i0, n, block):
            for i in range(i0, min(i0 + block, n)):
                for j in range(max(j0, i + 1), min(j0 + block, n)):
                    g[j, i] = g[i, j]


@functools.cache
def gram_kernel() -> Callable[..., None]:
    """`_gram_rows` compiled (cached on disk like the SVD fit), for float64 and float32 ``g``."""
    index = ", ".join(["int64[::1]"] * 4)
    signatures = [f"void({index}, {t}[:, ::1])" for t in ("float64", "float32")]
    return njit_cached(_gram_rows, signatures, "the EASE Gram matrix")


def weights_from_gram(g: np.ndarray, lam: float, overwrite: bool) -> np.ndarray:
    """B from ``G = XᵀX`` (Cholesky inverse of ``G + λI``), as float32."""
    if g.shape[0] <= 1:
        # No movie kept (none with enough ratings): an empty model. One: B's zero diagonal.
        return np.zeros(g.shape, dtype=np.float32)
    # G is symmetric: its transpose is the same matrix in Fortran order, which LAPACK then
    # works on in place instead of copying it first.
    a = (g if overwrite else g.copy()).T
    a[np.diag_indices_from(a)] += lam
    # G + λI is symmetric positive definite: Cholesky inverse, half the work of a general one.
    potrf, potri = scipy.linalg.get_lapack_funcs(("potrf", "potri"), (a,))
    c, info = potrf(a, lower=True, overwrite_a=True, clean=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: XᵀX + λI is not positive definite (info {info})")
    p, info = potri(c, lower=True, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inverse failed (info {info})")
    # C order: scipy's sparse @ dense would copy a Fortran-ordered B on every product (every
    # request, in serving). One compiled pass reads potri's lower triangle, no mirrored copy.
    weights = np.empty(p.shape, dtype=np.float32)
    weights_kernel()(np.asfortranarray(p), weights)
    return weights


def _weights_from_lower_inverse(p: np.ndarray, out: np.ndarray) -> None:
    """``out = B``: ``B[i, j] = -P[i, j] / P[j, j]`` off the diagonal, 0 on it, from the lower
    triangle of a Fortran-ordered ``P`` (read down its columns, where it is contiguous)."""
    n = p.shape[0]
    for j in range(n):
        out[j, j] = 0.0
        for i in range(j + 1, n):
            v = p[i, j]  # = P[j, i]
            out[i, j] = -v / p[j, j]
            out[j, i] = -v / p[i, i]


@functools.cache
def weights_kernel() -> Callable[..., None]:
    """`_weights_from_lower_inverse` compiled (cached on disk), for float64 and float32 ``P``."""
    signatures = [f"void({t}[::1, :], float32[:, ::1])" for t in ("float64", "float32")]
    return njit_cached(_weights_from_lower_inverse, signatures, "the EASE weights")


def fit_ease(
    users: np.ndarray,
    movies: np.ndarray,
    lam: float,
    max_items: int | None = DEFAULT_MAX_ITEMS,
    dtype: type = np.float64,
    log: logging.Logger | None = None,
    min_ratings: int = 1,
) -> EASEModel:
    """EASE on the (user, movie) interactions, over the ``max_items`` most-rated movies with
    at least ``min_ratings`` ratings."""
    return fit_ease_path(users, movies, [lam], max_items, dtype, log, min_ratings)[0]


def fit_ease_path(
    users: np.ndarray,
    movies: np.ndarray,
    lambdas: list[float] | tuple[float, ...],
    max_items: int | None = DEFAULT_MAX_ITEMS,
    dtype: type = np.float64,
    log: logging.Logger | None = None,
    min_ratings: int = 1,
) -> list[EASEModel]:
    """One EASE per λ, sharing one ``XᵀX``."""
    return map_ease_path(users, movies, lambdas, _itself, max_items, dtype, log, min_ratings)


def map_ease_path(
    users: np.ndarray,
    movies: np.ndarray,
    lambdas: list[float] | tuple[float, ...],
    use: Callable[[EASEModel], R],
    max_items: int | None = DEFAULT_MAX_ITEMS,
    dtype: type = np.float64,
    log: logging.Logger | None = None,
    min_ratings: int = 1,
) -> list[R]:
    """``[use(EASE with λ) for λ in lambdas]``, sharing one ``XᵀX`` (what the validation grid
    needs). ``use`` runs where its λ was solved, forked workers included (it reaches them
    through the fork, so it may be a closure): only what it returns comes back, so a grid
    scored there never holds every λ's weights in one process (0.4 GB each at 10K movies)."""
    if not lambdas or min(lambdas) <= 0:
        raise ValueError(f"EASE needs positive λ values, got {list(lambdas)}")
    t0 = time.perf_counter()
    g, kept, n_pairs, n_users = gram(users, movies, max_items, dtype, min_ratings)
    if log is not None:
        log.info("ease: XᵀX of %d movies in %.1fs", kept.size, time.perf_counter() - t0)
    path = _Path(g, kept, n_pairs, n_users, use)
    used = []
    solved = _solve_path(path, [float(lam) for lam in lambdas])
    for lam, (value, seconds) in zip(lambdas, solved, strict=True):
        if log is not None:
            log.info("ease: λ=%g solved in %.1fs", lam, seconds)
        used.append(value)
    return used


def _itself(model: EASEModel) -> EASEModel:
    return model


@dataclass
class _Path:
    """What every λ of a path shares: ``XᵀX`` and what ``use`` needs to make a model."""

    g: np.ndarray
    kept: np.ndarray
    n_pairs: int
    n_users: int
    use: Callable[[EASEModel], object]

    def solve(self, lam: float, overwrite: bool) -> tuple[object, float]:
        """``use`` of the model with ``lam`` and the seconds its solve took."""
        start = time.perf_counter()
        weights = weights_from_gram(self.g, lam, overwrite)
        seconds = time.perf_counter() - start
        return self.use(EASEModel(self.kept, weights, lam, self.n_pairs, self.n_users)), seconds


def _solve_path(path: _Path, lambdas: list[float]) -> list[tuple[object, float]]:
    """Each λ's ``use`` and solve seconds: whole rounds in forked workers, the rest here.

    The workers run one solve each at a time with one BLAS thread (scipy's LAPACK wrappers
    hold the GIL, so threads would take turns); they inherit XᵀX through the fork. A last,
    partial round would leave workers idle, so its solves run in this process with every BLAS
    thread instead: 5 λ on 2 cores at 10,000 movies took 105 s as three rounds and take ~84 s
    as two rounds plus one threaded solve (`bench/bench_ranking_model.py --shape 5m --path`).
    """
    n_jobs = min(len(lambdas), cpu_count())
    forked = 0 if runs_inline(n_jobs, len(lambdas)) else len(lambdas) - len(lambdas) % n_jobs
    solved = fork_map(_solve_shared, path, lambdas[:forked], n_jobs) if forked else []
    rest = lambdas[forked:]
    solved += [path.solve(lam, overwrite=i == len(rest) - 1) for i, lam in enumerate(rest)]
    return solved


def _solve_shared(path: _Path, lam: float) -> tuple[object, float]:
    return path.solve(lam, overwrite=False)
