"""Most-popular suggestions for every user, without a model: the shelf while none is champion."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.ranking import SOURCE_POPULAR
from recsys_assets.ml.topn import top_n


def most_popular(
    users: np.ndarray,
    movies: np.ndarray,
    ratings: np.ndarray,
    n: int = 50,
    excluded: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Each user's `n` most-rated movies they have not rated: `user_id, movie_id, rank, score,
    source='popular'`, ranked like the pipeline's cold-start lists (rating count, ties by movie
    id). `score` is the movie's mean rating. `excluded`: more (user, movie) pairs never to
    suggest, e.g. movies a user marked without a rating; they do not count as ratings."""
    users = np.asarray(users, dtype=np.int64)
    movies = np.asarray(movies, dtype=np.int64)
    ratings = np.asarray(ratings, dtype=np.float64)
    raw_iids, inner = np.unique(movies, return_inverse=True)
    counts = np.bincount(inner, minlength=raw_iids.size)
    means = np.bincount(inner, ratings, minlength=raw_iids.size) / np.maximum(counts, 1)
    raw_uids = np.unique(users)
    mu = float(ratings.mean()) if ratings.size else 0.0
    # A rank-0 "model" whose estimate is the movie's mean rating (mu + bi), ranked by count.
    factors = SVDFactors(
        global_mean=mu,
        bu=np.zeros(raw_uids.size),
        bi=means - mu,
        pu=np.zeros((raw_uids.size, 0)),
        qi=np.zeros((raw_iids.size, 0)),
        raw_uids=raw_uids,
        raw_iids=raw_iids,
        lower=float(ratings.min(initial=0.0)),
        upper=float(ratings.max(initial=0.0)),
    )
    seen_users, seen_movies = users, movies
    if excluded is not None:
        seen_users = np.concatenate([users, np.asarray(excluded[0], dtype=np.int64)])
        seen_movies = np.concatenate([movies, np.asarray(excluded[1], dtype=np.int64)])
    frame = top_n(
        factors,
        raw_uids,
        seen_users,
        seen_movies,
        n=n,
        item_bonus=counts.astype(np.float64),
        estimate_weight=0.0,
    )
    return frame.assign(source=SOURCE_POPULAR)
