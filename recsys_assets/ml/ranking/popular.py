"""Most-popular suggestions for every user, without a model: the shelf while none is champion."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys_assets.ml.arrays import unique
from recsys_assets.ml.ranking.keys import PopularOrder
from recsys_assets.ml.ranking.policy import SOURCE_POPULAR

__all__ = ["most_popular"]


def most_popular(
    users: np.ndarray,
    movies: np.ndarray,
    ratings: np.ndarray,
    n: int = 50,
    excluded: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Each user's `n` most-rated movies they have not rated: `user_id, movie_id, rank, score,
    source='popular'`, ranked like the pipeline's cold-start lists (`keys.PopularOrder`).
    `score` is the movie's mean rating. `excluded`: more (user, movie) pairs never to
    suggest, e.g. movies a user marked without a rating; they do not count as ratings."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    users = np.asarray(users, dtype=np.int64)
    movies = np.asarray(movies, dtype=np.int64)
    ratings = np.asarray(ratings, dtype=np.float64)
    raw_iids, inner = np.unique(movies, return_inverse=True)
    counts = np.bincount(inner, minlength=raw_iids.size)
    means = np.bincount(inner, ratings, minlength=raw_iids.size) / np.maximum(counts, 1)
    raw_uids = unique(users)
    seen_users, seen_movies = users, movies
    if excluded is not None:
        seen_users = np.concatenate([users, np.asarray(excluded[0], dtype=np.int64)])
        seen_movies = np.concatenate([movies, np.asarray(excluded[1], dtype=np.int64)])
    # One popularity order for every user, walked without scoring users x movies (which
    # took minutes at 25M ratings x 59K movies).
    movie, user_rows, rank = PopularOrder.of(raw_iids, counts).lists(
        raw_uids, seen_users, seen_movies, n
    )
    mu = float(ratings.mean()) if ratings.size else 0.0
    # The movie's mean rating, as a rank-0 SVD (mu + bi) would estimate and clip it.
    lower, upper = float(ratings.min(initial=0.0)), float(ratings.max(initial=0.0))
    score = np.clip(mu + (means - mu)[movie], lower, upper)
    return pd.DataFrame(
        {
            "user_id": raw_uids[user_rows],
            "movie_id": raw_iids[movie],
            "rank": rank,
            "score": score.astype(np.float64, copy=False),
            "source": SOURCE_POPULAR,
        }
    )
