"""Fitting Surprise's SVD (`fit_svd`, every fit of the project) on a `CompactTrainset`, with
progress reported through a logger."""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
from surprise import SVD

from recsys_assets.choices import ENGINES, Engine
from recsys_assets.ml.datasets import CompactTrainset
from recsys_assets.ml.svd_sgd import fit_compiled

# Users with fewer training ratings than this get the popularity list (cold start).
DEFAULT_MIN_USER_RATINGS = 5

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
    engine: Engine = field(default=DEFAULT_ENGINE, compare=False)

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


def fit_svd(
    trainset: CompactTrainset,
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
            # One build of the all_ratings() lists for every epoch of SVD.fit.
            with trainset.cached_ratings():
                model.fit(trainset)
    model.fit_engine = params.engine
    return model


def fit_engine_of(model: SVD) -> str:
    """Which engine fitted `model` (models from before the switch: Surprise's own fit)."""
    return getattr(model, "fit_engine", "surprise")


def training_error(
    model: SVD, trainset: CompactTrainset, chunk: int = 8_192
) -> tuple[float, float]:
    """RMSE and MAE on the ratings the model was trained on (NOT a generalisation estimate)."""
    users, items, ratings = trainset.arrays()
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
