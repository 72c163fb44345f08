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
from itertools import chain
from pathlib import Path

import numpy as np
from surprise import SVD, Trainset

from recsys_assets.ml.compact_data import CompactTrainset
from recsys_assets.ml.surprise_internals import AlgoBase, get_rng
from recsys_assets.settings import recsys_home

__all__ = [
    "fit_compiled",
    "kernel_load_seconds",
    "njit_cached",
    "numba_cache_dir",
    "sgd_kernel",
    "trainset_arrays",
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
    """One epoch of `SVD.sgd`, statement for statement (same operand order: same rounding)."""
    n_factors = pu.shape[1]
    for k in range(ratings.shape[0]):
        u = users[k]
        i = items[k]
        r = ratings[k]
        dot = 0.0
        for f in range(n_factors):
            dot += qi[i, f] * pu[u, f]
        err = r - (global_mean + bu[u] + bi[i] + dot)
        if biased:
            bu[u] += lr_bu * (err - reg_bu * bu[u])
            bi[i] += lr_bi * (err - reg_bi * bi[i])
        for f in range(n_factors):
            puf = pu[u, f]
            qif = qi[i, f]
            pu[u, f] += lr_pu * (err * qif - reg_pu * puf)
            qi[i, f] += lr_qi * (err * puf - reg_qi * qif)


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


_load_seconds: float | None = None


def njit_cached(fn: Callable, signature: str, what: str) -> Callable:
    """`fn` compiled by numba for `signature` (no fastmath), cached under `numba_cache_dir()`.

    numba reads `NUMBA_CACHE_DIR` once, at import; the directory is set on numba's config
    only while this function is compiled, so `RECSYS_HOME` (or a `NUMBA_CACHE_DIR` set after
    numba was imported) is honoured and nothing else is affected. An unwritable directory
    costs the compile in every process but does not fail.
    """
    import numba
    from numba.core import config

    cache_dir = numba_cache_dir()
    cache = _writable(cache_dir)
    if not cache:
        _log.warning("numba cache %s is not writable: compiling %s in-process", cache_dir, what)
    saved = config.CACHE_DIR
    config.CACHE_DIR = str(cache_dir) if cache else saved
    try:
        return numba.njit(signature, cache=cache, fastmath=False, nogil=True)(fn)
    finally:
        config.CACHE_DIR = saved


@functools.cache
def sgd_kernel() -> Callable[..., None]:
    """The compiled epoch, loaded from the on-disk cache (compiled and stored on a miss)."""
    global _load_seconds
    start = time.perf_counter()
    kernel = njit_cached(_sgd_epoch, _SIGNATURE, "the SVD fit")
    _load_seconds = time.perf_counter() - start
    return kernel


def kernel_load_seconds() -> float | None:
    """Seconds the first `sgd_kernel()` of this process took (import + cache load or compile)."""
    return _load_seconds


def trainset_arrays(trainset: Trainset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inner user ids, inner item ids and ratings, in `trainset.all_ratings()` order."""
    if isinstance(trainset, CompactTrainset):
        return trainset.arrays()
    ur = trainset.ur
    n = trainset.n_ratings
    lengths = np.fromiter((len(v) for v in ur.values()), dtype=np.int64, count=len(ur))
    users = np.repeat(np.fromiter(ur.keys(), dtype=np.int64, count=len(ur)), lengths)
    # ur holds (item, rating) tuples: flatten them straight into one float array.
    flat = np.fromiter(
        chain.from_iterable(chain.from_iterable(ur.values())), dtype=np.float64, count=2 * n
    ).reshape(n, 2)
    return users, flat[:, 0].astype(np.int64), flat[:, 1].copy()


def fit_compiled(
    model: SVD,
    trainset: Trainset,
    on_epoch: Callable[[int], None] | None = None,
) -> SVD:
    """`model.fit(trainset)` with the compiled loop: the same `model`, fitted, returned.

    `on_epoch(e)` is called before epoch e (progress; the loop runs an epoch per call).
    """
    kernel = sgd_kernel()
    users, items, ratings = trainset_arrays(trainset)
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
