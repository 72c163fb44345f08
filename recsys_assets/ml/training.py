"""Fitting Surprise's SVD (`fit_svd`, every fit of the project), with progress reported through a
logger; the trainsets and rating arrays the fits and evaluations share."""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
from surprise import SVD, Dataset, Trainset

from recsys_assets.ml.arrays import Ratings
from recsys_assets.ml.compact_data import CompactDataset, CompactTrainset, shared_objects
from recsys_assets.ml.svd_sgd import fit_compiled
from recsys_assets.ml.svd_sgd import trainset_arrays as _trainset_arrays

# Users with fewer training ratings than this get the popularity list (cold start).
DEFAULT_MIN_USER_RATINGS = 5

# How an SVD is fitted: "compiled" (ml/svd_sgd.py, numba) or "surprise" (`SVD.fit` itself).
# Both give the same model bit for bit; "surprise" is there to check that in a run.
ENGINES = ("compiled", "surprise")
DEFAULT_ENGINE = "compiled"


@dataclass(frozen=True)
class SVDParams:
    """The seed's hyperparameters: SVD(n_epochs=20, lr_all=0.005, reg_all=0.02).

    `engine` is how the model is fitted, not a hyperparameter: it is left out of `as_dict()`
    (the hyperparameters CV and the final fit must share) and recorded on the model itself.
    """

    n_epochs: int = 20
    lr_all: float = 0.005
    reg_all: float = 0.02
    n_factors: int = 100
    random_state: int = 42
    engine: str = field(default=DEFAULT_ENGINE, compare=False)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"SVD engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")

    def build(self, verbose: bool = False) -> SVD:
        return SVD(**self.as_dict(), verbose=verbose)

    def as_dict(self) -> dict:
        """The hyperparameters (SVD's constructor arguments), without the engine."""
        return {k: v for k, v in asdict(self).items() if k != "engine"}


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


def _first_seen_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inner ids numbered by first appearance (as Surprise does), and each id's first row."""
    _, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    inner = np.empty_like(order)
    inner[order] = np.arange(order.size)
    return inner[inverse.ravel()], first[order]


def _grouped(keys: np.ndarray, values: np.ndarray, ratings: np.ndarray, n: int) -> defaultdict:
    """{key: [(value, rating), ...]} in row order, keys 0..n-1 in order (as Surprise's ur/ir)."""
    perm = np.argsort(keys, kind="stable")
    pairs = list(zip(values[perm].tolist(), ratings[perm].tolist(), strict=True))
    bounds = [0, *np.cumsum(np.bincount(keys, minlength=n)).tolist()]
    return defaultdict(list, {k: pairs[bounds[k] : bounds[k + 1]] for k in range(n)})


def build_trainset(dataset: Dataset, ratings: Ratings, index: np.ndarray) -> Trainset:
    """`dataset.construct_trainset([raw[i] for i in index])`, equal in every field, faster.

    `ratings` are `dataset.raw_ratings` as arrays. Surprise's builder is a per-rating Python
    loop; here ids are numbered with numpy and only the (id, rating) tuples are Python
    objects. The id maps are keyed by the raw ids' own objects.
    """
    index = np.asarray(index, dtype=np.int64)
    if isinstance(dataset, CompactDataset):
        # Straight from the arrays, without materializing per-rating tuples (same trainset).
        return dataset.trainset_of(index)
    raw = dataset.raw_ratings
    users, user_first = _first_seen_ids(ratings.users[index])
    items, item_first = _first_seen_ids(ratings.movies[index])
    values = ratings.ratings[index]
    return Trainset(
        _grouped(users, items, values, user_first.size),
        _grouped(items, users, values, item_first.size),
        user_first.size,
        item_first.size,
        index.size,
        dataset.reader.rating_scale,
        {raw[index[f]][0]: u for u, f in enumerate(user_first.tolist())},
        {raw[index[f]][1]: i for i, f in enumerate(item_first.tolist())},
    )


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
    """`SVD(**params).fit(trainset)`, with epoch progress sent to `log` every few seconds.

    Every SVD fit of the project goes through here. `params.engine` "compiled" runs the
    numba loop (`ml.svd_sgd`, the same model bit for bit), "surprise" runs `SVD.fit`; the
    model's `fit_engine` attribute says which one fitted it.
    """
    with _progress_to(log, "svd fit: ", progress_interval) as verbose:
        model = params.build(verbose=verbose)
        if params.engine == "compiled":
            # SVD.sgd prints the same line before each epoch when verbose.
            def progress(epoch: int) -> None:
                print(f"Processing epoch {epoch}")

            fit_compiled(model, trainset, progress if verbose else None)
        else:
            with _fast_all_ratings(trainset):
                model.fit(trainset)
    model.fit_engine = params.engine
    return model


def fit_engine_of(model: SVD) -> str:
    """Which engine fitted `model` (models from before the switch: Surprise's own fit)."""
    return getattr(model, "fit_engine", "surprise")


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


def n_ratings_of(dataset: Dataset) -> int:
    """Number of ratings, without materializing a CompactDataset's per-rating tuples."""
    return len(dataset) if isinstance(dataset, CompactDataset) else len(dataset.raw_ratings)


def ratings_of(dataset: Dataset) -> Ratings:
    """Every rating of `dataset` as arrays (a CompactDataset's own, without tuples)."""
    if isinstance(dataset, CompactDataset):
        users, items, ratings = dataset.testset_arrays(slice(None))
        return Ratings(
            users.astype(np.int64, copy=False), items.astype(np.int64, copy=False), ratings
        )
    return Ratings.from_tuples(dataset.raw_ratings)
