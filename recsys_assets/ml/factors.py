"""`SVDFactors`: what ``SVD.predict`` needs, pulled out of a fitted ``surprise.SVD`` once.

Scoring from plain arrays gives the same numbers as ``predict``:

* known user:   ``clip(mu + bu[u] + bi[i] + qi[i] . pu[u], lower, upper)``
* unknown user: ``clip(mu + bi[i], lower, upper)`` (biased SVD drops bu and the dot product)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_assets.ml.arrays import lookup
from recsys_assets.ml.surprise_internals import raw2inner_items, raw2inner_users

__all__ = ["SVDFactors", "score_pairs"]


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
            raw_uids=_raw_ids_to_int64(raw2inner_users(ts), "user"),
            raw_iids=_raw_ids_to_int64(raw2inner_items(ts), "movie"),
            lower=float(lower),
            upper=float(upper),
        )

    @property
    def n_users(self) -> int:
        return int(self.raw_uids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.raw_iids.shape[0])


def score_pairs(factors: SVDFactors, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """``model.predict(u, i).est`` for parallel arrays of raw ids, vectorized.

    Unknown users or movies lose their bias (and the dot product), as in ``SVD.estimate``.
    """
    u = lookup(factors.raw_uids, np.asarray(users, dtype=np.int64).ravel())
    i = lookup(factors.raw_iids, np.asarray(movies, dtype=np.int64).ravel())
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
