"""The most-popular shelf: count order, rated and marked movies never suggested."""

from __future__ import annotations

import numpy as np

from recsys_assets.ml.ranking.popular import most_popular


def _ratings():
    # Movie 10 is rated by 4 users, 20 by 3, 30 by 2, 40 by 1.
    pairs = [(1, 10), (2, 10), (3, 10), (4, 10), (2, 20), (3, 20), (4, 20), (3, 30), (4, 30)]
    pairs += [(4, 40)]
    users = np.array([u for u, _ in pairs])
    movies = np.array([m for _, m in pairs])
    return users, movies, np.linspace(1.0, 5.0, len(pairs))


def test_each_user_gets_the_most_rated_movies_they_have_not_rated():
    users, movies, ratings = _ratings()
    frame = most_popular(users, movies, ratings, n=3)
    lists = frame.groupby("user_id")["movie_id"].apply(list).to_dict()
    # User 4 rated every movie: no row.
    assert lists == {1: [20, 30, 40], 2: [30, 40], 3: [40]}
    assert (frame["source"] == "popular").all()
    # score: the movie's mean rating
    mean_20 = ratings[movies == 20].mean()
    assert frame.loc[(frame.user_id == 1) & (frame.movie_id == 20), "score"].item() == mean_20


def test_movies_marked_without_a_rating_are_not_suggested_and_do_not_count():
    users, movies, ratings = _ratings()
    # User 1 marked movie 20 (NULL rating); users 1 and 2 marked movie 40.
    excluded = (np.array([1, 1, 2]), np.array([20, 40, 40]))
    frame = most_popular(users, movies, ratings, n=3, excluded=excluded)
    lists = frame.groupby("user_id")["movie_id"].apply(list).to_dict()
    assert lists[1] == [30]
    assert lists[2] == [30]
    # The marks are not ratings: movie 40 still ranks after 30 for user 3.
    assert lists[3] == [40]


def test_same_lists_as_ranking_every_movie_by_count():
    """The popularity walk against the definition: score every movie by count (ties by id),
    drop the seen ones, keep the first n; heavy and unknown users, marks and ties included."""
    rng = np.random.default_rng(7)
    users = rng.integers(0, 30, 600)
    movies = rng.zipf(1.4, 600) % 25
    ratings = rng.integers(1, 11, 600) / 2
    marks = (rng.integers(0, 35, 40), rng.integers(0, 30, 40))  # some unknown users/movies
    frame = most_popular(users, movies, ratings, n=7, excluded=marks)
    ids, counts = np.unique(movies, return_counts=True)
    by_count = ids[np.lexsort((ids, -counts))]
    pairs = [(users, movies), marks]
    seen = {pair for u, m in pairs for pair in zip(u.tolist(), m.tolist(), strict=True)}
    for user in np.unique(users):
        expected = [m for m in by_count.tolist() if (user, m) not in seen][:7]
        got = frame[frame.user_id == user].sort_values("rank")
        assert got["movie_id"].tolist() == expected
        assert got["rank"].tolist() == list(range(1, len(expected) + 1))
