"""The baselines the SVD's rating error is compared with: the global mean and Surprise's
``BaselineOnly`` (``mu + bu + bi``, its ALS fit vectorized, tested equal to Surprise's)."""

from __future__ import annotations

import numpy as np

from recsys_assets.ml.arrays import Ratings, lookup
from recsys_assets.ml.factors import SVDFactors

__all__ = ["baseline_als", "baseline_factors", "error"]


# Surprise's BaselineOnly defaults (bsl_options): ALS epochs and the user / item regularisation.
ALS_EPOCHS, REG_U, REG_I = 10, 15.0, 10.0


def baseline_als(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_items: int,
    global_mean: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Surprise's ``BaselineOnly`` fit (``baseline_als``, its default options), vectorized.

    Same alternating updates over inner ids as Surprise's Cython loop, with ``bincount`` sums:
    equal to ``BaselineOnly().fit(trainset)``'s ``bu``/``bi`` up to summation order (tested).
    """
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    n_u = np.bincount(users, minlength=n_users)
    n_i = np.bincount(items, minlength=n_items)
    for _ in range(ALS_EPOCHS):
        bi = np.bincount(items, ratings - global_mean - bu[users], n_items) / (REG_I + n_i)
        bu = np.bincount(users, ratings - global_mean - bi[items], n_users) / (REG_U + n_u)
    return bu, bi


def baseline_factors(factors: SVDFactors, train: Ratings, global_mean: float) -> SVDFactors:
    """``BaselineOnly`` (``mu + bu + bi``) on ``train``, as zero-rank factors for ``score_pairs``.

    ``factors`` (the SVD fitted on the same trainset) supplies the inner id order and scale.
    """
    users = lookup(factors.raw_uids, train.users)
    items = lookup(factors.raw_iids, train.movies)
    bu, bi = baseline_als(
        users, items, train.ratings, factors.n_users, factors.n_items, global_mean
    )
    return SVDFactors(
        global_mean=float(global_mean),
        bu=bu,
        bi=bi,
        pu=np.zeros((factors.n_users, 0)),
        qi=np.zeros((factors.n_items, 0)),
        raw_uids=factors.raw_uids,
        raw_iids=factors.raw_iids,
        lower=factors.lower,
        upper=factors.upper,
    )


def error(est: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    err = est - truth
    return float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))
