"""Synthetic demo ratings: deterministic, exact counts, realistic shape, vectorised speed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_assets.data.demo import MIN_RATINGS_PER_USER, generate_demo_ratings


@pytest.fixture(scope="module")
def demo() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_demo_ratings()


def test_same_seed_same_data_other_seed_differs() -> None:
    a_movies, a = generate_demo_ratings(n_users=200, n_movies=300, n_ratings=10_000, seed=5)
    b_movies, b = generate_demo_ratings(n_users=200, n_movies=300, n_ratings=10_000, seed=5)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a_movies, b_movies)
    _, c = generate_demo_ratings(n_users=200, n_movies=300, n_ratings=10_000, seed=6)
    assert not a.equals(c)


def test_default_shape_and_values(demo: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    movies, ratings = demo
    assert list(movies.columns) == ["id", "title"]
    assert movies["id"].tolist() == list(range(1, 1701))
    assert movies["title"].str.fullmatch(r"Movie \d+ \(\d{4}\)").all()
    assert movies["title"].iloc[16].startswith("Movie 17 (")

    assert list(ratings.columns) == ["user_id", "movie_id", "rating", "timestamp"]
    assert len(ratings) == 100_000
    assert dict(ratings.dtypes) == {
        "user_id": np.int64,
        "movie_id": np.int64,
        "rating": np.float64,
        "timestamp": np.int64,
    }
    assert not ratings.duplicated(["user_id", "movie_id"]).any()
    assert set(ratings["user_id"]) == set(range(1, 1001))
    assert ratings["movie_id"].between(1, 1700).all()
    # Whole stars, every level used, a plausible mean.
    assert set(ratings["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 3.2 < ratings["rating"].mean() < 4.2
    # ~2 years of unix seconds, emitted in time order.
    span = ratings["timestamp"].max() - ratings["timestamp"].min()
    assert 1.5 * 365 * 86400 < span <= 2 * 365 * 86400
    assert ratings["timestamp"].is_monotonic_increasing


def test_long_tails(demo: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, ratings = demo
    per_movie = ratings["movie_id"].value_counts()
    top_decile_share = per_movie.iloc[:170].sum() / len(ratings)
    assert top_decile_share > 0.35  # uniform popularity would give 0.10
    per_user = ratings["user_id"].value_counts()
    assert per_user.min() >= MIN_RATINGS_PER_USER
    assert per_user.max() > 5 * per_user.median()  # heavy-tailed activity


def test_ratings_carry_learnable_signal(demo: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    # User and movie effects exist: per-entity means spread far beyond sampling noise.
    _, ratings = demo
    user_means = ratings.groupby("user_id")["rating"].mean()
    assert user_means.std() > 0.25
    movie_means = ratings.groupby("movie_id")["rating"].agg(["mean", "size"])
    assert movie_means.loc[movie_means["size"] >= 50, "mean"].std() > 0.3


@pytest.mark.parametrize(
    ("users", "movies", "n"),
    [(10, 10, 100), (50, 40, 1_999), (30, 500, 100), (1, 5, 3), (3, 3, 0)],
)
def test_exact_counts_without_duplicates(users: int, movies: int, n: int) -> None:
    movie_frame, ratings = generate_demo_ratings(
        n_users=users, n_movies=movies, n_ratings=n, seed=1
    )
    assert len(movie_frame) == movies
    assert len(ratings) == n
    assert not ratings.duplicated(["user_id", "movie_id"]).any()
    if n:
        per_user = ratings["user_id"].value_counts()
        assert per_user.min() >= min(MIN_RATINGS_PER_USER, n // users)


def test_impossible_request_is_rejected() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        generate_demo_ratings(n_users=2, n_movies=3, n_ratings=7)
    with pytest.raises(ValueError):
        generate_demo_ratings(n_users=0)


def test_a_million_ratings() -> None:
    # Speed is the benchmarks' business (bench/), never a timed assertion here.
    _, ratings = generate_demo_ratings(n_users=10_000, n_movies=5_000, n_ratings=1_000_000, seed=2)
    assert len(ratings) == 1_000_000
    assert not ratings.duplicated(["user_id", "movie_id"]).any()
