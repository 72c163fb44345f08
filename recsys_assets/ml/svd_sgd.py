"""Surprise's `SVD.fit`, compiled with numba: the same model, bit for bit, several times faster.

`SVD.sgd` (Surprise 1.1.5, `matrix_factorization.pyx`) is a Cython loop, but every rating still
crosses from Python to C through `trainset.all_ratings()`, a nested Python generator. Here the
same arithmetic runs over three flat arrays (inner user ids, inner item ids, ratings in
`all_ratings()` order), compiled without `fastmath`, so every floating-point operation happens in
the same order and rounding as in the Cython loop: `pu`, `qi`, `bu`, `bi` are `np.array_equal`
to `SVD.fit`'s (tested). The initialisation is Surprise's own (`get_rng` + `rng.normal`, `pu`
then `qi`), so the result is a plain `surprise.SVD` that pickles, predicts and loads without
numba.

The compiled function is cached on disk (`numba_cache_dir`), so a machine compiles it once and
every later process (a Dagster step, a forked CV worker's parent) only loads it.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from surprise import SVD

from recsys_assets.ml.datasets import CompactTrainset
from recsys_assets.ml.surprise_internals import AlgoBase, get_rng
from recsys_assets.settings import recsys_home

__all__ = [
    "fit_compiled",
    "kernel_load_seconds",
    "njit_cached",
    "numba_cache_dir",
    "sgd_kernel",
]

_log = logging.getLogger(__name__)

# One signature, compiled eagerly: the ids are int32 (`CompactTrainset`'s own dtype), the
# ratings and parameters float64 (the Cython loop's `double`).
_SIGNATURE = (
    "void(int32[::1], int32[::1], float64[::1], float64[::1], float64[::1],"
    " float64[:, ::1], float64[:, ::1], float64, boolean,"
    " float64, float64, float64, float64, float64, float64, float64, float64)"
)


def _sgd_epoch(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    bu: np.ndarray,
    bi: np.ndarray,
    pu: np.ndarray,
    qi: np.ndarray,
    global_mean: float,
    biased: bool,
    lr_bu: float,
    lr_bi: float,
    lr_pu: float,
    lr_qi: float,
    reg_bu: float,
    reg_bi: float,
    reg_pu: float,
    reg_qi: float,
) -> None:
    """One epoch of `SVD.sgd`: every floating-point operation of the Cython loop, in its order.

    The Cython loop per rating: ``dot = sum(qi[i, f] * pu[u, f])`` over f in order (a chain of
    `n_factors` dependent additions, the loop's critical path), the error, the bias updates,
    then ``pu[u, f] += lr_pu * (err * qi[i, f] - reg_pu * pu[u, f])`` and the same for `qi`.
    Here the next rating's dot product is summed inside this rating's update loop: term f of
    it reads `pu[u', f]` and `qi[i', f]` right after this rating updated index f, which is
    all the sequential loop would have changed there, so every value is the same. The CPU
    then runs the addition chain while the updates (four factors at a time, vectorised by
    LLVM's SLP pass) proceed beside it, instead of one after the other.
    """
    n_factors = pu.shape[1]
    n = ratings.shape[0]
    if n == 0:
        return
    # Unsigned indices: numba emits no negative-index wraparound, so the four updates of a
    # block are adjacent loads and stores that SLP can vectorise.
    end = np.uint64(n_factors)
    blocked = np.uint64(n_factors - n_factors % 4)
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    p_next = pu[users[0]]
    q_next = qi[items[0]]
    dot = 0.0
    for f in range(n_factors):
        dot += q_next[f] * p_next[f]
    for k in range(n):
        u = users[k]
        i = items[k]
        err = ratings[k] - (global_mean + bu[u] + bi[i] + dot)
        if biased:
            bu[u] += lr_bu * (err - reg_bu * bu[u])
            bi[i] += lr_bi * (err - reg_bi * bi[i])
        p = pu[u]
        q = qi[i]
        # The last rating sums its own (discarded) next dot: one spare chain per epoch.
        k_next = k + 1 if k + 1 < n else k
        p_next = pu[users[k_next]]
        q_next = qi[items[k_next]]
        dot = 0.0
        f = np.uint64(0)
        while f < blocked:
            f1, f2, f3 = f + one, f + two, f + three
            p0, p1, p2, p3 = p[f], p[f1], p[f2], p[f3]
            q0, q1, q2, q3 = q[f], q[f1], q[f2], q[f3]
            p[f] = p0 + lr_pu * (err * q0 - reg_pu * p0)
            p[f1] = p1 + lr_pu * (err * q1 - reg_pu * p1)
            p[f2] = p2 + lr_pu * (err * q2 - reg_pu * p2)
            p[f3] = p3 + lr_pu * (err * q3 - reg_pu * p3)
            q[f] = q0 + lr_qi * (err * p0 - reg_qi * q0)
            q[f1] = q1 + lr_qi * (err * p1 - reg_qi * q1)
            q[f2] = q2 + lr_qi * (err * p2 - reg_qi * q2)
            q[f3] = q3 + lr_qi * (err * p3 - reg_qi * q3)
            dot += q_next[f] * p_next[f]
            dot += q_next[f1] * p_next[f1]
            dot += q_next[f2] * p_next[f2]
            dot += q_next[f3] * p_next[f3]
            f += np.uint64(4)
        while f < end:
            p0 = p[f]
            q0 = q[f]
            p[f] = p0 + lr_pu * (err * q0 - reg_pu * p0)
            q[f] = q0 + lr_qi * (err * p0 - reg_qi * q0)
            dot += q_next[f] * p_next[f]
            f += one


def numba_cache_dir() -> Path:
    """`NUMBA_CACHE_DIR` when set (numba's own variable), else `<RECSYS_HOME>/numba_cache`."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    return Path(env).expanduser().resolve() if env else recsys_home() / "numba_cache"


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def njit_cached(fn: Callable, signature: str, what: str, slp: bool = False) -> Callable:
    """`fn` compiled by numba for `signature` (no fastmath), cached under `numba_cache_dir()`.

    numba reads `NUMBA_CACHE_DIR` once, at import; the directory is set on numba's config
    only while this function is compiled, so `RECSYS_HOME` (or a `NUMBA_CACHE_DIR` set after
    numba was imported) is honoured and nothing else is affected. An unwritable directory
    costs the compile in every process but does not fail. `slp` turns on LLVM's SLP
    vectoriser (off in numba by default) for this compile only; it vectorises independent
    operations and never reorders a floating-point sum, so results stay bit-identical.
    """
    import numba
    from numba.core import config

    cache_dir = numba_cache_dir()
    cache = _writable(cache_dir)
    if not cache:
        _log.warning("numba cache %s is not writable: compiling %s in-process", cache_dir, what)
    saved = config.CACHE_DIR, config.SLP_VECTORIZE
    config.CACHE_DIR = str(cache_dir) if cache else saved[0]
    if slp:
        config.SLP_VECTORIZE = 1
    try:
        return numba.njit(signature, cache=cache, fastmath=False, nogil=True)(fn)
    finally:
        config.CACHE_DIR, config.SLP_VECTORIZE = saved


@functools.cache
def _loaded_kernel() -> tuple[Callable[..., None], float]:
    start = time.perf_counter()
    kernel = njit_cached(_sgd_epoch, _SIGNATURE, "the SVD fit", slp=True)
    return kernel, time.perf_counter() - start


def sgd_kernel() -> Callable[..., None]:
    """The compiled epoch, loaded from the on-disk cache (compiled and stored on a miss)."""
    return _loaded_kernel()[0]


def kernel_load_seconds() -> float | None:
    """Seconds the first `sgd_kernel()` of this process took (import + cache load or compile)."""
    return _loaded_kernel()[1] if _loaded_kernel.cache_info().currsize else None


def fit_compiled(
    model: SVD,
    trainset: CompactTrainset,
    on_epoch: Callable[[int], None] | None = None,
) -> SVD:
    """`model.fit(trainset)` with the compiled loop: the same `model`, fitted, returned.

    `on_epoch(e)` is called before epoch e (progress; the loop runs an epoch per call).
    """
    kernel = sgd_kernel()
    users, items, ratings = trainset.arrays()
    users = np.ascontiguousarray(users, dtype=np.int32)
    items = np.ascontiguousarray(items, dtype=np.int32)
    ratings = np.ascontiguousarray(ratings, dtype=np.float64)
    # What SVD.fit -> AlgoBase.fit + SVD.sgd set up, in the same order (the RNG draws pu first).
    AlgoBase.fit(model, trainset)
    rng = get_rng(model.random_state)
    bu = np.zeros(trainset.n_users, dtype=np.double)
    bi = np.zeros(trainset.n_items, dtype=np.double)
    pu = rng.normal(model.init_mean, model.init_std_dev, size=(trainset.n_users, model.n_factors))
    qi = rng.normal(model.init_mean, model.init_std_dev, size=(trainset.n_items, model.n_factors))
    pu = np.ascontiguousarray(pu, dtype=np.double)
    qi = np.ascontiguousarray(qi, dtype=np.double)
    # sgd reads trainset.global_mean even when unbiased (it caches it on the trainset).
    global_mean = float(trainset.global_mean)
    if not model.biased:
        global_mean = 0.0
    rates = [
        float(getattr(model, name))
        for name in ("lr_bu", "lr_bi", "lr_pu", "lr_qi", "reg_bu", "reg_bi", "reg_pu", "reg_qi")
    ]
    for epoch in range(model.n_epochs):
        if on_epoch is not None:
            on_epoch(epoch)
        kernel(users, items, ratings, bu, bi, pu, qi, global_mean, bool(model.biased), *rates)
    model.bu, model.bi, model.pu, model.qi = bu, bi, pu, qi
    return model
