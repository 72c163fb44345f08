"""EASE (`ml.ease`): the closed form, the kept-item cap, and the lists it ranks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from surprise import SVD, Dataset, Reader

from recsys_assets.ml.arrays import Ratings
from recsys_assets.ml.datasets import CompactDataset
from recsys_assets.ml.ease import NOT_KEPT_FLOOR, fit_ease, fit_ease_path, gram, kept_items
from recsys_assets.ml.factors import SVDFactors, score_pairs
from recsys_assets.ml.ranking import (
    SOURCE_EASE,
    SOURCE_POPULAR,
    RankingPolicy,
    ShippedModel,
    item_counts,
    popularity_feature,
    rank_users,
    ranking_metrics,
)
from recsys_assets.ml.selection.evaluation import ranking_evals


def direct_ease(x: np.ndarray, lam: float) -> np.ndarray:
    """Column by column: ridge regression of movie j on every other movie (b_jj = 0)."""
    n = x.shape[1]
    b = np.zeros((n, n))
    for j in range(n):
        others = [i for i in range(n) if i != j]
        a = x[:, others]
        b[others, j] = np.linalg.solve(a.T @ a + lam * np.eye(n - 1), a.T @ x[:, j])
    return b


def test_closed_form_equals_a_direct_solve():
    # 4 users x 3 movies, by hand: user 0 rated movies 10 and 20, ...
    users = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    movies = np.array([10, 20, 10, 20, 30, 30, 20, 30])
    x = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1], [0, 1, 1]], dtype=float)
    model = fit_ease(users, movies, lam=0.5, max_items=None)
    assert model.raw_iids.tolist() == [10, 20, 30]
    np.testing.assert_allclose(model.weights, direct_ease(x, 0.5), atol=1e-6)
    assert np.all(np.diag(model.weights) == 0)
    assert model.weights.flags.c_contiguous  # else every sparse product copies it
    # Scores of user 0 (rated 10, 20) = sum of rows 10 and 20 of B.
    rated = model.rated_rows(np.array([0]), users, movies)
    np.testing.assert_allclose(
        model.scores_of(rated)[0], model.weights[0] + model.weights[1], rtol=1e-6
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gram_counts_co_rated_movies_exactly(dtype):
    # Duplicated (user, movie) pairs count once; the cap drops the least-rated movies.
    rng = np.random.default_rng(3)
    users = rng.integers(0, 60, 2_000)
    movies = rng.integers(1, 80, 2_000) * 7
    g, kept, n_pairs, n_users = gram(users, movies, max_items=50, dtype=dtype)
    x = np.zeros((users.max() + 1, kept.size))
    col = np.searchsorted(kept, movies)
    inside = (col < kept.size) & (kept[np.minimum(col, kept.size - 1)] == movies)
    x[users[inside], col[inside]] = 1.0
    assert g.dtype == dtype and kept.size == 50
    np.testing.assert_array_equal(g, x.T @ x)
    assert n_pairs == int(x.sum()) and n_users == int((x.sum(axis=1) > 0).sum())


# Two λ: one round of forked solves on 2 cores; three: a round and one solve in this process.
@pytest.mark.parametrize("lambdas", [[3.0, 40.0], [3.0, 40.0, 7.0]])
def test_closed_form_on_random_data_and_a_lambda_path(lambdas):
    rng = np.random.default_rng(0)
    users, movies = rng.integers(0, 30, 300), rng.integers(0, 12, 300) * 3 + 5
    # A duplicated pair is one interaction.
    users, movies = np.append(users, users[:5]), np.append(movies, movies[:5])
    uid, mid = np.unique(users), np.unique(movies)
    x = np.zeros((uid.size, mid.size))
    x[np.searchsorted(uid, users), np.searchsorted(mid, movies)] = 1
    path = fit_ease_path(users, movies, lambdas, max_items=None)
    for model, lam in zip(path, lambdas, strict=True):
        np.testing.assert_allclose(model.weights, direct_ease(x, lam), atol=1e-5)
        assert model.n_ratings == int(x.sum()) and model.n_users == uid.size
    single = fit_ease(users, movies, 40.0, max_items=None, dtype=np.float32)
    np.testing.assert_allclose(single.weights, path[1].weights, atol=1e-4)


def test_the_cap_keeps_the_most_rated_movies():
    movies = np.array([5, 5, 5, 7, 7, 9, 9, 1])
    assert kept_items(movies, 2).tolist() == [5, 7]  # 7 and 9 tie at 2: the lower id
    assert kept_items(movies, None).tolist() == [1, 5, 7, 9]
    model = fit_ease(np.arange(8) % 3, movies, 1.0, max_items=2)
    assert model.raw_iids.tolist() == [5, 7] and model.weights.shape == (2, 2)
    with pytest.raises(ValueError, match="positive"):
        fit_ease(np.arange(8), movies, 0.0)


def test_the_floor_leaves_out_rarely_rated_movies():
    movies = np.array([5, 5, 5, 7, 7, 9, 9, 1])
    assert kept_items(movies, None, min_ratings=2).tolist() == [5, 7, 9]
    assert kept_items(movies, 1, min_ratings=2).tolist() == [5]
    model = fit_ease(np.arange(8) % 3, movies, 1.0, max_items=None, min_ratings=3)
    assert model.raw_iids.tolist() == [5] and model.weights.shape == (1, 1)
    # No movie rated often enough: an empty model, whose list is most-popular.
    empty = fit_ease(np.arange(8) % 3, movies, 1.0, max_items=None, min_ratings=4)
    assert empty.n_items == 0 and empty.weights.shape == (0, 0)
    catalogue, popularity = np.array([1, 5, 7, 9]), np.array([0.1, 0.9, 0.5, 0.4])
    rated = empty.rated_rows(np.array([0]), np.array([0]), np.array([5]))
    keys = empty.catalogue_keys(empty.scores_of(rated), catalogue, popularity)
    assert catalogue[np.argsort(-keys[0])].tolist() == [5, 7, 9, 1]


def test_ease_settings_name_a_bad_floor():
    from recsys_assets.ml.selection.list_choice import EaseSettings

    with pytest.raises(ValueError, match="ease_min_item_ratings"):
        EaseSettings(min_item_ratings=0)


@pytest.fixture(scope="module")
def fitted():
    """A small SVD + EASE on the same training ratings, and held-out ratings."""
    rng = np.random.default_rng(3)
    n = 4000
    users, movies = rng.integers(1, 90, n), rng.zipf(1.3, n) % 140 + 1
    frame = pd.DataFrame({"user_id": users, "movie_id": movies, "rating": rng.integers(1, 6, n)})
    frame = frame.drop_duplicates(["user_id", "movie_id"]).reset_index(drop=True)
    test_mask = rng.random(len(frame)) < 0.25
    train, test = frame[~test_mask], frame[test_mask]
    data = Dataset.load_from_df(train, Reader(rating_scale=(1, 5)))
    svd = SVD(n_factors=4, n_epochs=5, random_state=0).fit(data.build_full_trainset())
    factors = SVDFactors.from_svd(svd)
    # Few kept movies: some users have rated every one, their lists go on by popularity.
    ease = fit_ease(train["user_id"].to_numpy(), train["movie_id"].to_numpy(), 20.0, max_items=25)
    return factors, ease, train, test


def _brute_force(factors, ease, users, train, pop, n):
    """Sort the whole catalogue by EASE's catalogue keys, rated movies out, ties by id."""
    rated_rows = ease.rated_rows(users, train["user_id"].to_numpy(), train["movie_id"].to_numpy())
    keys = ease.catalogue_keys(ease.scores_of(rated_rows), factors.raw_iids, pop)
    out = {}
    for r, user in enumerate(users.tolist()):
        seen = set(train.loc[train["user_id"] == user, "movie_id"].tolist())
        order = np.lexsort((factors.raw_iids, -keys[r]))
        out[user] = [int(m) for m in factors.raw_iids[order] if int(m) not in seen][:n]
    return out


# Blocks of 7 users on one thread, and side by side on three.
@pytest.mark.parametrize("n_threads", [1, 3])
def test_ease_lists_exclude_rated_movies_and_fill_from_the_catalogue(fitted, n_threads):
    factors, ease, train, _ = fitted
    users = np.unique(train["user_id"].to_numpy())
    counts = item_counts(factors.raw_iids, train["movie_id"].to_numpy())
    policy = RankingPolicy(1.0, 0.0, 0.0, 3, ranker=SOURCE_EASE)
    table = rank_users(
        ShippedModel(factors, counts, policy, ease),
        users,
        (train["user_id"].to_numpy(), train["movie_id"].to_numpy()),
        n=30,
        block_size=7,
        n_threads=n_threads,
    )
    rated = set(zip(train["user_id"], train["movie_id"], strict=True))
    assert not any(pair in rated for pair in zip(table["user_id"], table["movie_id"], strict=True))
    per_user = train.groupby("user_id").size()
    warm = per_user[per_user >= 3].index.to_numpy()
    ease_rows = table[table["source"] == SOURCE_EASE]
    assert set(ease_rows["user_id"]) == set(warm.tolist())
    assert set(table.loc[table["source"] == SOURCE_POPULAR, "user_id"]).isdisjoint(warm)
    # Full lists (30 of ~140 movies), in the whole-catalogue order: kept movies first.
    expected = _brute_force(factors, ease, warm, train, popularity_feature(counts), 30)
    for user, rows in ease_rows.groupby("user_id"):
        assert rows["rank"].tolist() == list(range(1, 31))
        assert rows["movie_id"].tolist() == expected[user]
    assert any(  # some lists ran past the 25 kept movies
        not set(rows["movie_id"]) <= set(ease.raw_iids.tolist())
        for _, rows in ease_rows.groupby("user_id")
    )
    # score stays the SVD's predicted rating.
    np.testing.assert_allclose(
        ease_rows["score"], score_pairs(factors, ease_rows["user_id"], ease_rows["movie_id"])
    )
    with pytest.raises(ValueError, match="no ranking model"):
        ShippedModel(factors, counts, policy)


def test_in_cv_evaluation_scores_the_shipped_list(fitted):
    """ranking_evals' EASE figures are those of the lists user_predictions ships."""
    factors, ease, train, test = fitted
    train_r = Ratings(
        train["user_id"].to_numpy(), train["movie_id"].to_numpy(), train["rating"].to_numpy(float)
    )
    test_r = Ratings(
        test["user_id"].to_numpy(), test["movie_id"].to_numpy(), test["rating"].to_numpy(float)
    )
    policy = RankingPolicy(1.0, 0.0, 0.0, 4, ranker=SOURCE_EASE)
    counts = item_counts(factors.raw_iids, train_r.movies)
    users = np.unique(test_r.users)
    shipped = rank_users(
        ShippedModel(factors, counts, policy, ease), users, (train_r.users, train_r.movies), 10
    )
    expected = ranking_metrics(shipped, test[["user_id", "movie_id"]], k=10)
    (got,) = ranking_evals(
        factors, train_r, [test_r], [], ease_models=[ease], ease_min_user_ratings=4
    )[0]
    for metric in ("precision", "recall", "ndcg"):
        assert got[metric] == pytest.approx(expected[metric], abs=1e-12)
    assert NOT_KEPT_FLOOR < -1e5  # far below any EASE score


@pytest.mark.parametrize(
    "policy",
    [
        RankingPolicy(1.0, 0.0, 0.0, 3, ranker=SOURCE_EASE),
        RankingPolicy(1.0, 1.0, 0.5, 3),  # the SVD blend
        RankingPolicy.popularity_only(min_user_ratings=10_000),  # every user cold
    ],
    ids=["ease", "blend", "popular"],
)
def test_excluded_pairs_leave_the_lists_whatever_the_ranker(fitted, policy):
    """Movies rated without a value (``excluded``) are never suggested, whichever list a user
    gets; they change nothing else: each list only loses them."""
    factors, ease, train, _ = fitted
    users = np.unique(train["user_id"].to_numpy())
    counts = item_counts(factors.raw_iids, train["movie_id"].to_numpy())
    shipped = ShippedModel(factors, counts, policy, ease)
    rated = (train["user_id"].to_numpy(), train["movie_id"].to_numpy())
    plain = rank_users(shipped, users, rated, n=12, block_size=7)
    expected_source = {"ease": SOURCE_EASE, "svd": "svd"}[policy.ranker]
    if policy.min_user_ratings > 1000:
        expected_source = SOURCE_POPULAR
    assert expected_source in set(plain["source"])
    first = plain.groupby("user_id").head(2)  # each user's top two
    got = rank_users(
        shipped, users, rated, n=12, block_size=7, excluded=(first.user_id, first.movie_id)
    )
    assert got.merge(first[["user_id", "movie_id"]]).empty
    pd.testing.assert_series_equal(
        got.groupby("user_id")["source"].first(), plain.groupby("user_id")["source"].first()
    )
    for user, rows in got.groupby("user_id"):
        was = plain.loc[plain["user_id"] == user, "movie_id"].tolist()
        assert len(rows) == 12 and rows["movie_id"].tolist()[:10] == was[2:]


LONER = 999  # rates only movies EASE leaves out


def loner_models():
    """The `fitted` training ratings plus a user whose 4 ratings are all movies outside EASE's
    25 kept ones: the SVD (on every rating), EASE and the ratings."""
    rng = np.random.default_rng(3)
    n = 4000
    users, movies = rng.integers(1, 90, n), rng.zipf(1.3, n) % 140 + 1
    frame = pd.DataFrame({"user_id": users, "movie_id": movies, "rating": rng.integers(1, 6, n)})
    frame = frame.drop_duplicates(["user_id", "movie_id"]).reset_index(drop=True)
    counts = frame["movie_id"].value_counts()
    tail = counts.index[np.lexsort((counts.index, counts.to_numpy()))][:4]  # least rated
    loner = pd.DataFrame({"user_id": LONER, "movie_id": np.sort(tail), "rating": 4})
    frame = pd.concat([frame, loner], ignore_index=True)
    data = CompactDataset.from_df(frame, Reader(rating_scale=(1, 5)))
    svd = SVD(n_factors=4, n_epochs=5, random_state=0).fit(data.build_full_trainset())
    ease = fit_ease(frame["user_id"].to_numpy(), frame["movie_id"].to_numpy(), 20.0, max_items=25)
    assert not set(tail.tolist()) & set(ease.raw_iids.tolist())
    return svd, ease, frame


@pytest.fixture(scope="module")
def loner():
    return loner_models()


@pytest.mark.parametrize("n", [10, 30])  # fewer, and more, than EASE's 25 kept movies
def test_ease_list_of_a_warm_user_who_rated_none_of_the_kept_movies(loner, n):
    """EASE scores every kept movie 0 for them: the kept movies come first by id, then the
    others by popularity, their own ratings left out; `n` rows, above their 4 ratings."""
    svd, ease, frame = loner
    factors = SVDFactors.from_svd(svd)
    counts = item_counts(factors.raw_iids, frame["movie_id"].to_numpy())
    rated = frame[frame["user_id"] == LONER]
    users = np.array([1, 2, LONER])
    pairs = (frame["user_id"].to_numpy(), frame["movie_id"].to_numpy())

    def lists(min_user_ratings: int) -> pd.DataFrame:
        policy = RankingPolicy(1.0, 0.0, 0.0, min_user_ratings, ranker=SOURCE_EASE)
        return rank_users(ShippedModel(factors, counts, policy, ease), users, pairs, n=n)

    # Exactly min_user_ratings (4) ratings: warm, EASE's list.
    table = lists(4)
    mine = table[table["user_id"] == LONER]
    assert set(mine["source"]) == {SOURCE_EASE}
    assert mine["rank"].tolist() == list(range(1, n + 1))
    kept = ease.raw_iids.tolist()
    others = [
        int(m)
        for m in factors.raw_iids[np.lexsort((factors.raw_iids, -counts))]
        if int(m) not in kept and int(m) not in set(rated["movie_id"])
    ]
    assert mine["movie_id"].tolist() == (kept + others)[:n]
    expected = _brute_force(factors, ease, users, frame, popularity_feature(counts), n)
    for user, rows in table.groupby("user_id"):
        assert rows["movie_id"].tolist() == expected[user]
    # One rating short of the cut-off: the most-popular list.
    cold = lists(5)
    assert set(cold.loc[cold["user_id"] == LONER, "source"]) == {SOURCE_POPULAR}
