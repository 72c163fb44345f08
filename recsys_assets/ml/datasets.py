"""The ratings the SVD is trained on: Surprise's `Dataset` and `Trainset`, as numpy arrays.

Surprise keeps one Python tuple per rating, several times over: `Dataset.raw_ratings` (a 4-tuple
plus a float and two ints each, ~150 bytes), its `df`, and every `Trainset` (`ur` and `ir`, a
2-tuple each). At 25M ratings that is ~4 GB per Dataset and ~3 GB per Trainset, and pickling
them (the IO manager between steps) costs minutes. SVD itself needs much less: `fit` reads
`n_users`, `n_items`, `global_mean` and iterates `all_ratings()`; `predict` asks
`knows_user/knows_item` and `to_inner_uid/iid`.

`CompactDataset` and `CompactTrainset` store three flat arrays (ids and ratings) and offer only
that; they pickle as arrays. The inner ids and the order of `all_ratings()` are exactly those
of `Dataset.construct_trainset` on the same ratings in the same order, so a fitted SVD is bit
for bit the model Surprise's own path produces (tested against `Dataset.load_from_df` and
`SVD.fit`). Surprise's per-rating structures (`raw_ratings`, `ur`, `ir`) are not built: no
code of the project reads them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from surprise import Reader, Trainset

from recsys_assets.ml.arrays import Ratings
from recsys_assets.ml.surprise_internals import DatasetAutoFolds, set_id_maps

__all__ = ["CompactDataset", "CompactTrainset", "compact_trainset", "shared_objects"]


def shared_objects(values: np.ndarray) -> list:
    """`values.tolist()`, but one Python object per distinct value, referenced n times.

    8 bytes per element instead of ~32: ratings have ~10 distinct values, ids a few 100K.
    """
    uniques, inverse = np.unique(values, return_inverse=True)
    return np.array(uniques.tolist(), dtype=object)[inverse.ravel()].tolist()


def _first_appearance_ids(raw: np.ndarray) -> tuple[np.ndarray, dict]:
    """Inner ids numbered by first appearance (Surprise's rule) and the raw -> inner dict."""
    uniq, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # uniq[order] = raw ids in appearance order
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(uniq.size)
    raw2inner = dict(zip(uniq[order].tolist(), range(uniq.size), strict=True))
    return rank[inverse.ravel()].astype(np.int32), raw2inner


class CompactTrainset(Trainset):
    """A `surprise.Trainset` stored as inner-id/rating arrays in the order they were given."""

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray,
        n_users: int,
        n_items: int,
        rating_scale: tuple[float, float],
        raw2inner_id_users: dict,
        raw2inner_id_items: dict,
    ) -> None:
        # Not Trainset.__init__: it would store the per-rating ur/ir.
        self._users = np.ascontiguousarray(users, dtype=np.int32)
        self._items = np.ascontiguousarray(items, dtype=np.int32)
        # float32 holds every half-star rating exactly; float64 on the way out.
        self._ratings = np.ascontiguousarray(ratings)
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.n_ratings = int(self._users.size)
        self.rating_scale = rating_scale
        set_id_maps(self, raw2inner_id_users, raw2inner_id_items)
        self._global_mean: float | None = None
        self._rating_lists: tuple[list, list, list] | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inner user ids, inner item ids, ratings (float64), in `all_ratings()` order."""
        # all_ratings() walks users in inner-id order, each user's ratings in input order.
        order = np.argsort(self._users, kind="stable")
        return self._users[order], self._items[order], self._ratings[order].astype(np.float64)

    def knows_user(self, uid: Any) -> bool:
        # Inner ids are 0..n-1; predict() passes a string for unknown raw ids.
        return isinstance(uid, int | np.integer) and 0 <= uid < self.n_users

    def knows_item(self, iid: Any) -> bool:
        return isinstance(iid, int | np.integer) and 0 <= iid < self.n_items

    def all_ratings(self) -> Iterator[tuple[int, int, float]]:
        """What Surprise's own `SVD.fit` iterates (the "surprise" engine), as Surprise orders it."""
        if self._rating_lists is not None:
            return zip(*self._rating_lists, strict=True)
        return zip(*self._build_rating_lists(), strict=True)

    def _build_rating_lists(self) -> tuple[list, list, list]:
        users, items, ratings = self.arrays()
        return shared_objects(users), shared_objects(items), shared_objects(ratings)

    @contextlib.contextmanager
    def cached_ratings(self) -> Iterator[None]:
        """Keep the `all_ratings()` lists for the duration (one build for all SGD epochs)."""
        self._rating_lists = self._build_rating_lists()
        try:
            yield
        finally:
            self._rating_lists = None

    @property
    def global_mean(self) -> float:
        if self._global_mean is None:
            # Same float64 pairwise mean Surprise computes over its list of ratings.
            self._global_mean = np.mean(self._ratings.astype(np.float64))
        return self._global_mean

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_rating_lists=None, _inner2raw_id_users=None, _inner2raw_id_items=None)
        return state


def compact_trainset(
    raw_users: np.ndarray,
    raw_items: np.ndarray,
    ratings: np.ndarray,
    rating_scale: tuple[float, float],
) -> CompactTrainset:
    """What `Dataset.construct_trainset` builds from these ratings in this order, as arrays."""
    users, raw2inner_u = _first_appearance_ids(np.asarray(raw_users))
    items, raw2inner_i = _first_appearance_ids(np.asarray(raw_items))
    return CompactTrainset(
        users,
        items,
        np.asarray(ratings),
        len(raw2inner_u),
        len(raw2inner_i),
        rating_scale,
        raw2inner_u,
        raw2inner_i,
    )


class CompactDataset(DatasetAutoFolds):
    """`Dataset.load_from_df(df[[user, item, rating]], reader)`, kept as three arrays.

    `build_full_trainset` and `trainset_of` go straight from the arrays.
    """

    def __init__(
        self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, reader: Reader
    ) -> None:
        # Not DatasetAutoFolds.__init__: it builds raw_ratings and keeps a copy of the df.
        self.reader = reader
        self.has_been_split = False
        self.users = np.ascontiguousarray(users)
        self.items = np.ascontiguousarray(items)
        self.ratings = np.ascontiguousarray(ratings)

    @classmethod
    def from_df(cls, df: pd.DataFrame, reader: Reader) -> CompactDataset:
        """From a frame whose first three columns are user id, item id, rating."""
        users, items, ratings = (df.iloc[:, k].to_numpy() for k in range(3))
        return cls(users, items, ratings, reader)

    def __len__(self) -> int:
        return int(self.users.size)

    def build_full_trainset(self) -> CompactTrainset:
        return compact_trainset(self.users, self.items, self.ratings, self.reader.rating_scale)

    def trainset_of(self, index: np.ndarray) -> CompactTrainset:
        """`construct_trainset([raw_ratings[k] for k in index])`, without the tuples."""
        return compact_trainset(
            self.users[index], self.items[index], self.ratings[index], self.reader.rating_scale
        )

    def rating_arrays(self) -> Ratings:
        """Every rating as int64 raw ids and float64 ratings, in the dataset's order."""
        return Ratings(
            self.users.astype(np.int64, copy=False),
            self.items.astype(np.int64, copy=False),
            self.ratings.astype(np.float64),
        )
