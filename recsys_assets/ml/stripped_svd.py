"""A fitted SVD without its training ratings: what ``predict`` and serving need, nothing more.

A fitted ``surprise.SVD`` keeps a reference to its whole trainset (every rating; Surprise's own
``Trainset`` made the seed's pickles ~4.9 MB on ml-100k). ``strip_svd`` swaps
it for a ``PredictionTrainset`` that keeps the raw->inner id maps, ``global_mean`` and
``rating_scale`` (all ``SVD.predict``/``estimate`` read), plus what serving needs to rank
without a database: ratings per movie (popularity) and each user's rated movies as CSR arrays.
"""

from __future__ import annotations

import copy

import numpy as np

from recsys_assets.ml.datasets import CompactTrainset
from recsys_assets.ml.surprise_internals import raw2inner_items, raw2inner_users

__all__ = ["PredictionTrainset", "strip_svd"]


class PredictionTrainset:
    """Stand-in for ``surprise.Trainset`` with the interface ``AlgoBase.predict`` uses."""

    def __init__(self, trainset: CompactTrainset) -> None:
        self._raw2inner_id_users = dict(raw2inner_users(trainset))
        self._raw2inner_id_items = dict(raw2inner_items(trainset))
        self.global_mean = float(trainset.global_mean)
        self.rating_scale = tuple(trainset.rating_scale)
        self.n_users = int(trainset.n_users)
        self.n_items = int(trainset.n_items)
        self.n_ratings = int(trainset.n_ratings)
        # Each user's rated movies (inner ids), CSR by inner user id: excluded when ranking.
        # The trainset's arrays are in all_ratings() order, i.e. grouped by inner user id.
        users, items, _ = trainset.arrays()
        lengths = np.bincount(users, minlength=self.n_users).astype(np.int64)
        self.user_items = np.ascontiguousarray(items, dtype=np.int32)
        self.user_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.item_counts = np.bincount(self.user_items, minlength=self.n_items).astype(np.int32)

    def knows_user(self, uid: object) -> bool:
        # predict() passes "UKN__<raw>" strings for unknown ids, as Surprise's Trainset expects.
        return isinstance(uid, (int, np.integer)) and 0 <= uid < self.n_users

    def knows_item(self, iid: object) -> bool:
        return isinstance(iid, (int, np.integer)) and 0 <= iid < self.n_items

    def to_inner_uid(self, ruid: object) -> int:
        try:
            return self._raw2inner_id_users[ruid]
        except KeyError:
            raise ValueError(f"User {ruid} is not part of the trainset.") from None

    def to_inner_iid(self, riid: object) -> int:
        try:
            return self._raw2inner_id_items[riid]
        except KeyError:
            raise ValueError(f"Item {riid} is not part of the trainset.") from None

    def rated_items(self, inner_uid: int) -> np.ndarray:
        """Inner ids of the movies user ``inner_uid`` rated in training."""
        return self.user_items[self.user_indptr[inner_uid] : self.user_indptr[inner_uid + 1]]


def strip_svd(model: object) -> object:
    """A copy of a fitted SVD whose ``trainset`` is a ``PredictionTrainset`` (same predictions)."""
    if getattr(model, "trainset", None) is None:
        raise ValueError("model is not fitted")
    if not isinstance(model.trainset, CompactTrainset):
        raise TypeError(
            f"strip_svd needs an SVD fitted on a CompactTrainset (ml/datasets.py), not on a "
            f"{type(model.trainset).__name__}"
        )
    stripped = copy.copy(model)
    stripped.trainset = PredictionTrainset(model.trainset)
    return stripped
