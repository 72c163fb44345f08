"""Fitting and cross-validating Surprise's SVD, with progress reported through a logger."""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from itertools import chain

import numpy as np
import pandas as pd
from surprise import SVD, Dataset, Trainset

from recsys_assets.ml.compact import CompactDataset, CompactTrainset, shared_objects
from recsys_assets.ml.topn import SVDFactors, score_pairs


@dataclass(frozen=True)
class SVDParams:
    """The seed's hyperparameters: SVD(n_epochs=20, lr_all=0.005, reg_all=0.02)."""

    n_epochs: int = 20
    lr_all: float = 0.005
    reg_all: float = 0.02
    n_factors: int = 100
    random_state: int = 42

    def build(self, verbose: bool = False) -> SVD:
        return SVD(**asdict(self), verbose=verbose)

    def as_dict(self) -> dict:
        return asdict(self)


class _LineLogger(io.TextIOBase):
    """A stdout stand-in that forwards Surprise's `print` progress lines to a logger.

    Lines are throttled to one per `min_interval` seconds (the first always passes): every
    log line is a stored event in Dagster, and 20 epochs of a 1-second fit are not progress
    anyone needs to read, while an epoch of a 25M-rating fit is.
    """

    def __init__(self, log: logging.Logger, prefix: str, min_interval: float) -> None:
        self._log, self._prefix, self._buf = log, prefix, ""
        self._min_interval, self._last = min_interval, -float("inf")

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            now = time.monotonic()
            if line.strip() and now - self._last >= self._min_interval:
                self._last = now
                self._log.info("%s%s", self._prefix, line.strip())
        return len(text)


@contextlib.contextmanager
def _progress_to(
    log: logging.Logger | None, prefix: str, min_interval: float = 5.0
) -> Iterator[bool]:
    # Surprise reports epochs only via print() when verbose; route them to the run's log.
    if log is None:
        yield False
        return
    with contextlib.redirect_stdout(_LineLogger(log, prefix, min_interval)):
        yield True


def _trainset_arrays(trainset: Trainset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


@contextlib.contextmanager
def _fast_all_ratings(trainset: Trainset) -> Iterator[None]:
    """Serve Surprise's SGD the same ratings, in the same order, from flat lists.

    `SVD.fit` iterates `trainset.all_ratings()` (a nested Python generator) once per epoch;
    zipping precomputed lists yields identical (u, i, r) tuples at about half the cost.
    The override is removed afterwards so it never ends up in a pickled model.
    """
    if isinstance(trainset, CompactTrainset):
        with trainset.cached_ratings():
            yield
        return
    users, items, ratings = (shared_objects(a) for a in _trainset_arrays(trainset))
    trainset.all_ratings = lambda: zip(users, items, ratings, strict=True)
    try:
        yield
    finally:
        del trainset.all_ratings


def fit_svd(
    trainset: Trainset,
    params: SVDParams,
    log: logging.Logger | None = None,
    progress_interval: float = 5.0,
) -> SVD:
    """`SVD(**params).fit(trainset)`, with epoch progress sent to `log` every few seconds."""
    with (
        _progress_to(log, "svd fit: ", progress_interval) as verbose,
        _fast_all_ratings(trainset),
    ):
        model = params.build(verbose=verbose)
        model.fit(trainset)
    return model


def training_error(model: SVD, trainset: Trainset, chunk: int = 8_192) -> tuple[float, float]:
    """RMSE and MAE on the ratings the model was trained on (NOT a generalisation estimate)."""
    users, items, ratings = _trainset_arrays(trainset)
    low, high = trainset.rating_scale
    squared = absolute = 0.0
    # Small chunks: the gathered factor rows stay in reused heap memory (no page faults for
    # fresh 80 MB temporaries) and memory stays flat at tens of millions of ratings.
    for start in range(0, len(ratings), chunk):
        u, i = users[start : start + chunk], items[start : start + chunk]
        est = model.trainset.global_mean + model.bu[u] + model.bi[i]
        est += (model.pu[u] * model.qi[i]).sum(axis=1)  # faster than einsum here
        err = np.clip(est, low, high) - ratings[start : start + chunk]
        squared += float(np.dot(err, err))
        absolute += float(np.abs(err).sum())
    n = max(len(ratings), 1)
    return float(np.sqrt(squared / n)), absolute / n


def fold_bounds(n_ratings: int, n_folds: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Shuffled rating indices and fold boundaries, exactly as `surprise...KFold(shuffle=True)`."""
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    if n_folds > n_ratings:
        raise ValueError(f"{n_ratings} ratings are too few for {n_folds}-fold cross-validation")
    indices = np.arange(n_ratings)
    np.random.RandomState(seed).shuffle(indices)
    bounds = [0]
    for fold in range(n_folds):
        bounds.append(bounds[-1] + n_ratings // n_folds + (1 if fold < n_ratings % n_folds else 0))
    return indices, bounds


def n_ratings_of(dataset: Dataset) -> int:
    """Number of ratings, without materializing a CompactDataset's per-rating tuples."""
    return len(dataset) if isinstance(dataset, CompactDataset) else len(dataset.raw_ratings)


def run_fold(
    dataset: Dataset,
    fold: int,
    n_folds: int,
    seed: int,
    params: SVDParams,
    log: logging.Logger | None = None,
) -> dict:
    """Fit on all folds but `fold` (1-based) and score the held-out one."""
    indices, bounds = fold_bounds(n_ratings_of(dataset), n_folds, seed)
    start, stop = bounds[fold - 1], bounds[fold]
    t0 = time.perf_counter()
    if isinstance(dataset, CompactDataset):
        # Straight from the arrays: no per-rating tuples (same trainset, see ml/compact.py).
        train_index = np.concatenate([indices[:start], indices[stop:]])
        trainset = dataset.trainset_of(train_index)
        del train_index
        test_users, test_items, test_ratings = dataset.testset_arrays(indices[start:stop])
    else:
        raw = dataset.raw_ratings
        train = [raw[i] for i in chain(indices[:start], indices[stop:])]
        trainset = dataset.construct_trainset(train)
        test = [raw[i] for i in indices[start:stop]]
        test_users = np.fromiter((r[0] for r in test), dtype=np.int64, count=len(test))
        test_items = np.fromiter((r[1] for r in test), dtype=np.int64, count=len(test))
        test_ratings = np.fromiter((r[2] for r in test), dtype=np.float64, count=len(test))
    del indices
    build_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = fit_svd(trainset, params, log=log)
    fit_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    # Vectorized equivalent of `model.test(testset)` + accuracy.rmse/mae.
    est = score_pairs(SVDFactors.from_svd(model), test_users, test_items)
    err = est - test_ratings
    test_time = time.perf_counter() - t0
    return {
        "fold": fold,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "fit_time": fit_time,
        "test_time": test_time,
        "trainset_time": build_time,
        "n_train": trainset.n_ratings,
        "n_test": int(test_ratings.size),
    }


# Forked fold workers inherit the dataset through this module global instead of receiving a
# pickled copy: no serialisation, no re-import, copy-on-write memory.
_FORK_DATASET: Dataset | None = None


def _run_fold_in_fork(fold: int, n_folds: int, seed: int, params: SVDParams) -> dict:
    assert _FORK_DATASET is not None
    return run_fold(_FORK_DATASET, fold, n_folds, seed, params)


def default_jobs(n_folds: int) -> int:
    return max(1, min(n_folds, os.cpu_count() or 1))


def cross_validate_svd(
    dataset: Dataset,
    params: SVDParams,
    n_folds: int = 4,
    seed: int = 42,
    n_jobs: int | None = None,
    log: logging.Logger | None = None,
    folds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Seeded k-fold CV (the folds of Surprise's KFold); a row per fold: RMSE, MAE, times.

    Each SVD fit is single-threaded, so folds run in `n_jobs` forked worker processes.
    `folds` (1-based) restricts the run to some of the folds: the Dagster fan-out gives each
    step its share.
    """
    global _FORK_DATASET
    fold_bounds(n_ratings_of(dataset), n_folds, seed)  # validate before forking
    folds = list(range(1, n_folds + 1) if folds is None else folds)
    if not folds or min(folds) < 1 or max(folds) > n_folds:
        raise ValueError(f"folds must be a non-empty subset of 1..{n_folds}, got {folds}")
    n_jobs = default_jobs(len(folds)) if n_jobs is None else n_jobs
    rows = []

    def report(row: dict) -> None:
        rows.append(row)
        if log is not None:
            log.info(
                "cv fold %d/%d: rmse=%.4f mae=%.4f fit=%.2fs test=%.2fs (%d done)",
                row["fold"],
                n_folds,
                row["rmse"],
                row["mae"],
                row["fit_time"],
                row["test_time"],
                len(rows),
            )

    if n_jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for fold in folds:
            report(run_fold(dataset, fold, n_folds, seed, params))
    else:
        _FORK_DATASET = dataset
        try:
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
                futures = [
                    pool.submit(_run_fold_in_fork, fold, n_folds, seed, params) for fold in folds
                ]
                for future in as_completed(futures):
                    report(future.result())
        finally:
            _FORK_DATASET = None
    return pd.DataFrame(rows).sort_values("fold").reset_index(drop=True)
