"""The shipped lists of many users at once (``user_predictions``, the refresh, benchmarks).

A rating's path: the caller's training pairs and the pairs to skip go in; warm users (known
to the model, at least ``min_user_ratings`` training ratings) get the policy's list (EASE or
the blend), the others the most-popular list; ``score`` is always the SVD's clipped
estimate. Every list skips the training pairs *and* the ``excluded`` ones (e.g. rated
without a value).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_assets.ml.arrays import lookup, unique
from recsys_assets.ml.ease import EASEModel
from recsys_assets.ml.factors import SVDFactors, score_pairs
from recsys_assets.ml.ranking.keys import PopularOrder, popularity_feature, taste_vectors, unit_rows
from recsys_assets.ml.ranking.policy import (
    SOURCE_EASE,
    SOURCE_POPULAR,
    SOURCE_SVD,
    RankingPolicy,
)
from recsys_assets.ml.ranking.top_k import (
    BlendRanking,
    _blocks_side_by_side,
    blend_lists,
    block_mask,
    list_frame,
    seen_matrix,
    top_k_indices,
)

__all__ = ["ShippedModel", "rank_users"]


@dataclass(frozen=True)
class ShippedModel:
    """What ranks a model's lists: its SVD factors, the ratings per movie it was trained on
    (indexed like ``factors.raw_iids``), its ranking policy and, when the policy ranks with
    EASE, the EASE model."""

    factors: SVDFactors
    counts: np.ndarray
    policy: RankingPolicy
    ease: EASEModel | None = None

    def __post_init__(self) -> None:
        if self.policy.ranker == SOURCE_EASE and self.ease is None:
            raise ValueError("the ranking policy ranks with EASE but no ranking model was given")


def rank_users(
    model: ShippedModel,
    users: np.ndarray,
    rated: tuple[np.ndarray, np.ndarray],
    n: int = 10,
    excluded: tuple[np.ndarray, np.ndarray] | None = None,
    block_size: int = 2048,
    n_threads: int | None = None,
) -> pd.DataFrame:
    """The shipped top-``n``: ``user_id, movie_id, rank, score, source`` per user, by user then
    rank. ``rated``: the training (users, movies) pairs (taste vectors, EASE's input, the
    cold-start rule); ``excluded``: further pairs kept out of the lists only. ``n_threads``:
    blocks of users ranked side by side (None: one per CPU); same result."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    f, policy = model.factors, model.policy
    users = unique(np.asarray(users, dtype=np.int64))
    rated_users = np.asarray(rated[0], dtype=np.int64).ravel()
    rated_movies = np.asarray(rated[1], dtype=np.int64).ravel()
    if rated_users.shape != rated_movies.shape:
        raise ValueError("the rated users and movies must have the same length")
    seen_users, seen_movies = rated_users, rated_movies
    if excluded is not None:
        seen_users = np.concatenate([rated_users, np.asarray(excluded[0], np.int64).ravel()])
        seen_movies = np.concatenate([rated_movies, np.asarray(excluded[1], np.int64).ravel()])
    pos = lookup(users, rated_users)
    per_user = np.bincount(pos[pos >= 0], minlength=users.size)
    warm = (lookup(f.raw_uids, users) >= 0) & (per_user >= policy.min_user_ratings)
    popularity = popularity_feature(model.counts)
    parts = []
    if warm.any():
        w = users[warm]
        seen = seen_matrix(w, f.raw_iids, seen_users, seen_movies)
        if policy.ranker == SOURCE_EASE:
            rows = model.ease.rated_rows(w, rated_users, rated_movies)
            ease = EaseRanking(model.ease, f.raw_iids, popularity)
            frame = ease.lists(w, rows, seen, n, block_size, n_threads)
            frame["score"] = score_pairs(f, frame["user_id"], frame["movie_id"])
            parts.append(frame.assign(source=SOURCE_EASE))
        else:
            taste = None
            if policy.taste_weight:
                taste = taste_vectors(f, w, rated_users, rated_movies)
            item_unit = unit_rows(np.asarray(f.qi, dtype=np.float64)) if taste is not None else None
            blend = BlendRanking(f, policy, popularity, taste, item_unit)
            frame = blend_lists(blend, w, seen, n, block_size, n_threads)
            parts.append(frame.assign(source=SOURCE_SVD))
    if (~warm).any():
        cold = users[~warm]
        where, user_rows, rank = PopularOrder.of(f.raw_iids, model.counts).lists(
            cold, seen_users, seen_movies, n
        )
        cold_users, movies = cold[user_rows], f.raw_iids[where]
        frame = list_frame([(cold_users, movies, rank, score_pairs(f, cold_users, movies))])
        parts.append(frame.assign(source=SOURCE_POPULAR))
    if not parts:
        return list_frame([]).assign(source="")
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["user_id", "rank"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class EaseRanking:
    """EASE's lists over a catalogue (``EASEModel.catalogue_keys``), computed on the movies
    EASE keeps first: a row goes through the whole catalogue only when fewer than ``n`` kept
    movies are left unseen (the other movies rank after every kept one)."""

    model: EASEModel
    catalogue: np.ndarray  # raw movie ids (the SVD's)
    popularity: np.ndarray  # per catalogue movie

    def lists(
        self, users, rated_rows, seen, n: int, block_size: int, n_threads: int | None
    ) -> pd.DataFrame:
        """``LIST_COLUMNS`` (score: 0, the caller's) of ``users`` (rows of ``rated_rows``,
        ``EASEModel.rated_rows``, and of ``seen``, ``top_k.seen_matrix``)."""
        n_items = self.catalogue.size
        kept_pos = lookup(self.catalogue, self.model.raw_iids)  # catalogue place of kept movies
        in_cat = np.flatnonzero(kept_pos >= 0)
        cols = kept_pos[in_cat]
        sub_of = np.full(n_items, -1, dtype=np.int64)
        sub_of[cols] = np.arange(cols.size)
        k = min(n, n_items)
        k_sub = min(k, cols.size)
        # Dense blocks of users x catalogue keys stay ~130 MB on a 59K-movie catalogue.
        step = max(1, min(block_size, 2**24 // max(n_items, 1)))

        def block(start: int) -> tuple[np.ndarray, ...]:
            stop = min(start + step, users.size)
            scores = self.model.scores_of(rated_rows[start:stop])
            mask_rows, mask_cols = block_mask(seen, start, stop)
            keys = scores[:, in_cat].astype(np.float64)
            sub = sub_of[mask_cols]
            keys[mask_rows[sub >= 0], sub[sub >= 0]] = -np.inf
            idx = np.zeros((stop - start, k), dtype=np.int64)
            valid = np.zeros((stop - start, k), dtype=bool)
            if k_sub:
                idx[:, :k_sub] = cols[top_k_indices(keys, k_sub, self.catalogue[cols])]
                valid[:, :k_sub] = np.isfinite(
                    np.take_along_axis(keys, sub_of[idx[:, :k_sub]], axis=1)
                )
            short = np.flatnonzero((~valid[:, :k_sub]).any(axis=1) | (k_sub < k))
            if short.size:  # too few kept movies left: rank the whole catalogue for these
                full = self.model.catalogue_keys(scores[short], self.catalogue, self.popularity)
                in_short = np.full(stop - start, -1)
                in_short[short] = np.arange(short.size)
                sel = in_short[mask_rows] >= 0
                full[in_short[mask_rows[sel]], mask_cols[sel]] = -np.inf
                idx[short] = top_k_indices(full, k, self.catalogue)
                valid[short] = np.isfinite(np.take_along_axis(full, idx[short], axis=1))
            rows, pos = np.nonzero(valid)
            movies = self.catalogue[idx[rows, pos]]
            return users[start:stop][rows], movies, pos + 1, np.zeros(rows.size)

        return list_frame(_blocks_side_by_side(block, range(0, users.size, step), n_threads))
