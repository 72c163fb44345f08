"""The ranking keys, one definition per list; every path that ranks (batch writes, CV, the
refresh, serving) builds its keys here.

* blend (``blend_keys``): ``rating_weight * est + popularity_weight * pop + taste_weight * cos``,
  added in that order, with ``pop = count / max count`` in [0, 1], ``cos`` the cosine of the
  user's taste vector (the unit mean of the item factors of the movies they rated) and each
  movie's item factors, and ``est`` the SVD's unclipped estimate;
* EASE: ``EASEModel.catalogue_keys`` (its scores; movies it does not rank after, by popularity);
* most popular (``PopularOrder``): training rating count, ties by lower movie id.

Every list skips the movies the user has seen (rated, or excluded by the caller) and breaks
ties by ascending movie id (``top_k.top_k_indices``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys_assets.ml.arrays import lookup, unique
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.ranking.policy import RankingPolicy

__all__ = [
    "PopularOrder",
    "blend_keys",
    "estimates",
    "item_counts",
    "popularity_feature",
    "taste_vectors",
    "unit_rows",
]


def item_counts(raw_iids: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """Ratings per movie among ``movies``, indexed like ``raw_iids`` (other movies ignored)."""
    inner = lookup(np.asarray(raw_iids, dtype=np.int64), np.asarray(movies, dtype=np.int64))
    return np.bincount(inner[inner >= 0], minlength=len(raw_iids)).astype(np.int64)


def popularity_feature(counts: np.ndarray) -> np.ndarray:
    """``count / max count``: 0 for unrated movies, 1 for the most rated."""
    counts = np.asarray(counts, dtype=np.float64)
    top = counts.max(initial=0.0)
    if top <= 0:
        return np.zeros_like(counts)
    return counts / top


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def taste_vectors(
    factors: SVDFactors, users: np.ndarray, rated_users: np.ndarray, rated_movies: np.ndarray
) -> np.ndarray:
    """Unit-length mean item factors of each user's rated movies (rows follow ``users``)."""
    row = lookup(users, rated_users)
    col = lookup(factors.raw_iids, rated_movies)
    keep = (row >= 0) & (col >= 0)
    rated = sp.csr_matrix(
        (np.ones(int(keep.sum())), (row[keep], col[keep])), shape=(users.size, factors.n_items)
    )
    rated.data[:] = 1.0  # duplicates count once
    return unit_rows(np.asarray(rated @ np.asarray(factors.qi, dtype=np.float64)))


def estimates(factors: SVDFactors, inner_users: np.ndarray, qi_t: np.ndarray) -> np.ndarray:
    """Unclipped float64 estimates of these users (inner ids, -1 = unknown) for every movie.

    Same association order as ``SVD.estimate``, ((mu + bu) + bi) + dot, so the floats match
    ``predict()`` to the last bit or two; an unknown user gets ``mu + bi``.
    """
    bi = np.asarray(factors.bi, dtype=np.float64)
    known = inner_users >= 0
    if known.all():  # the common case: no fancy-index copies
        scores = (factors.global_mean + factors.bu[inner_users])[:, None] + bi
        scores += factors.pu[inner_users] @ qi_t
        return scores
    scores = np.empty((inner_users.size, bi.size), dtype=np.float64)
    scores[~known] = factors.global_mean + bi
    if known.any():
        ku = inner_users[known]
        part = (factors.global_mean + factors.bu[ku])[:, None] + bi
        part += factors.pu[ku] @ qi_t
        scores[known] = part
    return scores


def blend_keys(
    policy: RankingPolicy, est: np.ndarray, popularity: np.ndarray, cos: np.ndarray | None
) -> np.ndarray:
    """The blend's keys (a new array): ``est`` (rows x movies, or candidates), ``popularity``
    broadcast against it, ``cos`` the taste cosines (None: taste weight 0)."""
    keys = est * policy.rating_weight
    if policy.popularity_weight:
        keys += policy.popularity_weight * popularity
    if policy.taste_weight:
        keys += policy.taste_weight * cos
    return keys


@dataclass(frozen=True)
class PopularOrder:
    """The most-popular order of a catalogue: count descending, ties by lower movie id."""

    raw_iids: np.ndarray  # the catalogue (sorted raw movie ids)
    order: np.ndarray  # catalogue positions, most popular first
    position: np.ndarray  # inverse: each movie's place in `order`

    @classmethod
    def of(cls, raw_iids: np.ndarray, counts: np.ndarray) -> PopularOrder:
        order = np.lexsort((raw_iids, -np.asarray(counts)))
        position = np.empty_like(order)
        position[order] = np.arange(order.size)
        return cls(raw_iids, order, position)

    def lists(
        self, users: np.ndarray, seen_users: np.ndarray, seen_movies: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each user's first ``n`` movies of the order they have not seen, without scoring
        users x movies: (catalogue positions, user rows in ``users`` (sorted, unique), ranks),
        ordered by user then rank. Pairs with an unknown user or movie are ignored."""
        picks, user_rows = self._first_unseen(users, seen_users, seen_movies, n)
        rank = np.arange(picks.size) - np.searchsorted(user_rows, user_rows) + 1
        return self.order[picks], user_rows, rank.astype(np.int64)

    def _first_unseen(
        self, users: np.ndarray, seen_users: np.ndarray, seen_movies: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """For each user, the ``n`` smallest places in the order that are not the place of a
        movie they have seen; returns (places, user rows), ordered by user then place.

        With the user's seen places sorted as ``s_0 < s_1 < ...`` and ``t_i = s_i - i``, the
        j-th unseen place is ``j + #{i : t_i <= j}``: one sorted search for every (user, j).
        """
        n_users, n_items = users.size, self.raw_iids.size
        row = lookup(users, np.asarray(seen_users, dtype=np.int64))
        col = lookup(self.raw_iids, np.asarray(seen_movies, dtype=np.int64))
        keep = (row >= 0) & (col >= 0)
        span = n_items + n + 1  # > any t_i or j: keys of different users never interleave
        seen = unique(row[keep] * n_items + self.position[col[keep]])
        seen_row, seen_pos = np.divmod(seen, n_items)
        first = np.searchsorted(seen_row, np.arange(n_users))
        t = seen_pos - (np.arange(seen.size) - first[seen_row])
        keys = seen_row * span + t
        j = np.arange(min(n, n_items))
        query = (np.arange(n_users)[:, None] * span + j).ravel()
        before = np.searchsorted(keys, query, side="right") - np.repeat(first, j.size)
        picks = np.tile(j, n_users) + before
        user_rows = np.repeat(np.arange(n_users), j.size)
        ok = picks < n_items  # a user who has seen all but a few movies gets fewer than n
        return picks[ok], user_rows[ok]

    def first_unseen_of_one(self, seen: np.ndarray, n: int) -> np.ndarray:
        """One user's list (catalogue positions): serving's per-request form of ``lists``."""
        if seen.size == 0:
            return self.order[:n]
        mask = np.ones(self.order.size, dtype=bool)
        mask[seen] = False
        return self.order[mask[self.order]][:n]
