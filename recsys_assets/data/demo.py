"""Synthetic, MovieLens-shaped ratings for demos, tests and benchmarks.

Everything is vectorised numpy (no per-rating Python loop), so the same code produces 100k or
25M ratings. The generative model mirrors what SVD assumes, which makes the data learnable:

    rating = round(clip(mu + b_user + b_movie + p_user · q_movie + noise, 1, 5))

with long-tail (Zipf-like) movie popularity and heavy-tailed per-user activity, like real
rating logs.

Counts: exactly `n_ratings` rows are returned, with no duplicate (user, movie) pair. That needs
n_ratings <= n_users * n_movies (ValueError otherwise). Every user gets at least
min(20, n_ratings // n_users) ratings; not every movie is necessarily rated (the long tail).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

N_FACTORS = 8
MIN_RATINGS_PER_USER = 20
# Timestamps end here (2023-11-14) and span about two years before it.
END_TS = 1_700_000_000
SPAN_SECONDS = 2 * 365 * 24 * 3600
GLOBAL_MEAN = 3.55


def _allocate_counts(total: int, weights: np.ndarray, floor: int, cap: int) -> np.ndarray:
    """Integer per-user counts summing exactly to `total`, each in [floor, cap], ∝ weights."""
    counts = np.full(weights.size, floor, dtype=np.int64)
    remaining = total - int(counts.sum())
    # Water-filling: hand out proportionally among users below the cap until nothing is left.
    while remaining > 0:
        open_weights = np.where(counts < cap, weights, 0.0)
        share = np.floor(remaining * open_weights / open_weights.sum()).astype(np.int64)
        share = np.minimum(share, cap - counts)
        if share.sum() == 0:
            # Fewer leftovers than open users: one more each for the heaviest open users.
            heaviest = np.argsort(-open_weights, kind="stable")[:remaining]
            counts[heaviest] += 1
            break
        counts += share
        remaining -= int(share.sum())
    return counts


def _sample_pairs(
    counts: np.ndarray, popularity: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user index, movie index) pairs: counts[u] per user, movies ∝ popularity.

    Draws with replacement, drops repeats, and re-draws only each user's shortfall. After a
    few popularity-weighted rounds the remainder is drawn uniformly from the whole catalogue,
    which converges fast even for users who rate a large part of it.
    """
    n_users, n_movies = counts.size, popularity.size
    accepted_keys = np.zeros(0, dtype=np.int64)  # user * n_movies + movie, sorted
    have = np.zeros(n_users, dtype=np.int64)
    uniform = np.full(n_movies, 1.0 / n_movies)
    for round_no in range(200):
        deficit = counts - have
        needy = np.flatnonzero(deficit > 0)
        if needy.size == 0:
            break
        need = deficit[needy]
        if round_no < 3:
            probs, draws = popularity, np.ceil(need * (1.3 + round_no)).astype(np.int64) + 2
        else:
            # A uniform draw hits an unrated movie with p = free / n_movies: oversample by 1/p.
            free = n_movies - have[needy]
            probs = uniform
            draws = np.ceil(need * n_movies / free * 1.5).astype(np.int64) + 4
        users = np.repeat(needy, draws)
        keys = users * n_movies + rng.choice(n_movies, size=users.size, p=probs)
        if accepted_keys.size:
            pos = np.minimum(np.searchsorted(accepted_keys, keys), accepted_keys.size - 1)
            keep = accepted_keys[pos] != keys
        else:
            keep = np.ones(keys.size, dtype=bool)
        _, first = np.unique(keys, return_index=True)
        unique_mask = np.zeros(keys.size, dtype=bool)
        unique_mask[first] = True
        keep &= unique_mask
        keys, users = keys[keep], users[keep]
        # `users` is grouped (np.repeat of an ascending array): rank within each user's draws.
        rank = np.arange(users.size) - np.searchsorted(users, users, side="left")
        take = rank < deficit[users]
        keys = keys[take]
        have += np.bincount(users[take], minlength=n_users)
        accepted_keys = np.sort(np.concatenate([accepted_keys, keys]))
    if (have < counts).any():  # pragma: no cover - never happens in practice
        raise RuntimeError("could not sample enough distinct (user, movie) pairs")
    return accepted_keys // n_movies, accepted_keys % n_movies


def generate_demo_ratings(
    n_users: int = 1000,
    n_movies: int = 1700,
    n_ratings: int = 100_000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (movies[id, title], ratings[user_id, movie_id, rating, timestamp]).

    Deterministic for a given seed. Ids start at 1; ratings are whole stars 1–5 stored as
    float64 (the DB column type); timestamps are int64 unix seconds over ~2 years, sorted
    ascending so auto-increment row ids follow time like a real log.
    """
    if n_users < 1 or n_movies < 1 or n_ratings < 0:
        raise ValueError("n_users and n_movies must be >= 1 and n_ratings >= 0")
    if n_ratings > n_users * n_movies:
        raise ValueError(
            f"n_ratings={n_ratings} exceeds n_users * n_movies = {n_users * n_movies} "
            "distinct (user, movie) pairs"
        )
    rng = np.random.default_rng(seed)

    # Movies: Zipf-like popularity over a random ordering, so popularity isn't tied to id.
    popularity_rank = rng.permutation(n_movies)
    popularity = 1.0 / (popularity_rank + 10.0) ** 1.2
    popularity /= popularity.sum()
    years = 2023 - np.floor(rng.gamma(2.0, 9.0, n_movies)).astype(np.int64).clip(0, 100)
    movie_ids = np.arange(1, n_movies + 1, dtype=np.int64)
    titles = [f"Movie {i} ({y})" for i, y in zip(movie_ids.tolist(), years.tolist(), strict=True)]
    movies = pd.DataFrame({"id": movie_ids, "title": pd.Series(titles, dtype=object)})

    # Users: heavy-tailed activity (lognormal), at least `floor` each, at most half the catalogue
    # unless the requested density forces more.
    floor = min(MIN_RATINGS_PER_USER, n_ratings // n_users)
    mean = -(-n_ratings // n_users)
    cap = min(n_movies, max(n_movies // 2, 2 * mean, floor))
    counts = _allocate_counts(n_ratings, rng.lognormal(0.0, 1.1, n_users), floor, cap)
    user_idx, movie_idx = _sample_pairs(counts, popularity, rng)

    # Ratings from biases + latent tastes + noise; popular movies are rated a bit higher.
    user_bias = rng.normal(0.0, 0.35, n_users)
    log_pop = np.log(popularity)
    movie_bias = rng.normal(0.0, 0.4, n_movies) + 0.15 * (log_pop - log_pop.mean()) / log_pop.std()
    # Factor-major layout: each factor's gather below reads one contiguous row.
    p = rng.normal(0.0, 0.45, (N_FACTORS, n_users))
    q = rng.normal(0.0, 0.45, (N_FACTORS, n_movies))
    score = GLOBAL_MEAN + user_bias[user_idx] + movie_bias[movie_idx]
    for k in range(N_FACTORS):  # loop over factors, not ratings: bounds temporaries to 1 column
        score += p[k][user_idx] * q[k][movie_idx]
    score += rng.normal(0.0, 0.6, user_idx.size)
    stars = np.rint(np.clip(score, 1.0, 5.0))

    # Each user joins somewhere in the window and rates mostly soon after joining.
    start = END_TS - SPAN_SECONDS
    joined = start + rng.uniform(0.0, 0.95, n_users) * SPAN_SECONDS
    # Beta(1, 3) by inverse CDF: same distribution as rng.beta, several times faster.
    frac = 1.0 - np.cbrt(1.0 - rng.random(user_idx.size))
    ts = (joined[user_idx] + frac * (END_TS - joined[user_idx])).astype(np.int64)

    # Pairs arrive sorted by (user, movie), so a stable sort on time breaks ties by them.
    order = np.argsort(ts, kind="stable")
    ratings = pd.DataFrame(
        {
            "user_id": user_idx[order] + 1,
            "movie_id": movie_idx[order] + 1,
            "rating": stars[order],
            "timestamp": ts[order],
        }
    )
    return movies, ratings
