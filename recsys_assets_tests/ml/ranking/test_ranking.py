"""Ranking metrics against a hand-computed example; the shipped ranking and its fallback."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from surprise import SVD, BaselineOnly, Dataset, Reader

from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.ml.arrays import Ratings
from recsys_assets.ml.baselines import baseline_als
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.ranking import (
    RankingPolicy,
    ShippedModel,
    item_counts,
    popularity_feature,
    rank_users,
    ranking_metrics,
)
from recsys_assets.ml.ranking.policy import choose_policy, grid_policies
from recsys_assets.ml.selection.evaluation import EvalScope, grid_ndcgs, ranking_evals


def ranking_eval(factors, train, test, policies, **scope) -> list[dict]:
    return ranking_evals(factors, train, [test], policies, scope=EvalScope(**scope))[0]


def rank(f, users, train_users, train_movies, counts, policy, n=10, excluded=None):
    shipped = ShippedModel(f, counts, policy)
    return rank_users(shipped, users, (train_users, train_movies), n=n, excluded=excluded)


def test_ranking_metrics_hand_computed():
    recommended = pd.DataFrame(
        {"user_id": [1, 1, 1, 2, 2], "movie_id": [10, 20, 30, 40, 50], "rank": [1, 2, 3, 1, 2]}
    )
    # user 1: one of two relevant movies at rank 2; user 2: its only one at rank 1;
    # user 3: relevant movie but no list (counts as zeros).
    relevant = pd.DataFrame({"user_id": [1, 1, 2, 3, 2], "movie_id": [20, 99, 40, 60, 40]})
    m = ranking_metrics(recommended, relevant, k=3)
    ndcg_1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["users"] == 3
    assert m["precision"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["ndcg"] == pytest.approx((ndcg_1 + 1 + 0) / 3)
    # k cuts the list: with k=1 user 1's hit at rank 2 no longer counts.
    m1 = ranking_metrics(recommended, relevant, k=1)
    assert m1["precision"] == pytest.approx(1 / 3)
    assert m1["ndcg"] == pytest.approx(1 / 3)


def test_ranking_metrics_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        ranking_metrics(pd.DataFrame(columns=["user_id", "movie_id", "rank"]), pd.DataFrame(), 0)


@pytest.fixture(scope="module")
def fitted():
    _, ratings = generate_demo_ratings(n_users=80, n_movies=60, n_ratings=2500, seed=3)
    data = Dataset.load_from_df(
        ratings[["user_id", "movie_id", "rating"]], Reader(rating_scale=(1, 5))
    )
    model = SVD(n_factors=6, n_epochs=10, random_state=0).fit(data.build_full_trainset())
    return model, ratings


def test_popularity_feature_and_counts():
    counts = item_counts(np.array([5, 7, 9]), np.array([7, 7, 9, 42]))
    assert counts.tolist() == [0, 2, 1]  # movie 42 is unknown to the model: ignored
    assert popularity_feature(counts).tolist() == [0.0, 1.0, 0.5]
    assert popularity_feature(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_the_blend_keeps_the_svd_score(fitted):
    model, ratings = fitted
    f = SVDFactors.from_svd(model)
    users = ratings["user_id"].unique()[:10]
    counts = np.linspace(0, 1000, f.n_items)  # popularity dominates: rank by count
    frame = rank(f, users, ratings["user_id"], ratings["movie_id"], counts, RankingPolicy(1e6), 5)
    for row in frame.head(20).itertuples():
        assert row.score == pytest.approx(model.predict(row.user_id, row.movie_id).est)
    first = frame[frame["user_id"] == frame["user_id"].iloc[0]]
    inner = [model.trainset.to_inner_iid(m) for m in first["movie_id"]]
    assert inner == sorted(inner, key=lambda i: -counts[i])


def test_rank_users_cold_start_and_unknown_users_get_popular(fitted):
    model, ratings = fitted
    f = SVDFactors.from_svd(model)
    counts = item_counts(f.raw_iids, ratings["movie_id"].to_numpy())
    per_user = ratings.groupby("user_id").size()
    heavy = int(per_user[per_user < f.n_items - 5].idxmax())  # has unrated movies left
    light = int(per_user.idxmin())
    policy = RankingPolicy(1.0, 1.0, 0.0, min_user_ratings=int(per_user.min()) + 1)
    frame = rank(
        f,
        [heavy, light, 10_000],  # 10_000: unknown to the model
        ratings["user_id"],
        ratings["movie_id"],
        counts,
        policy,
        n=5,
    )
    source = frame.groupby("user_id")["source"].first().to_dict()
    assert source == {heavy: "svd", light: "popular", 10_000: "popular"}
    # The unknown user gets the five most-rated movies, ties by movie id.
    order = sorted(range(f.n_items), key=lambda i: (-counts[i], f.raw_iids[i]))[:5]
    unknown = frame[frame["user_id"] == 10_000]
    assert unknown["movie_id"].tolist() == f.raw_iids[order].tolist()
    assert unknown["score"].tolist() == pytest.approx(
        [model.predict(10_000, m).est for m in unknown["movie_id"]]
    )
    # The light user's list skips what they rated.
    rated = set(ratings.loc[ratings["user_id"] == light, "movie_id"])
    assert not rated & set(frame.loc[frame["user_id"] == light, "movie_id"])


def test_rank_users_excluded_pairs_only_leave_the_lists(fitted):
    model, ratings = fitted
    f = SVDFactors.from_svd(model)
    counts = item_counts(f.raw_iids, ratings["movie_id"].to_numpy())
    per_user = ratings.groupby("user_id").size()
    users = per_user.index[:6].to_numpy()
    policy = RankingPolicy(1.0, 1.0, 0.5, min_user_ratings=int(per_user.iloc[:6].median()))
    args = (f, users, ratings["user_id"], ratings["movie_id"], counts, policy)
    plain = rank(*args, n=5)
    first = plain.groupby("user_id").head(2)  # each user's top two, warm and cold alike
    got = rank(*args, n=5, excluded=(first["user_id"], first["movie_id"]))
    # Same users, same sources (the cold-start rule and taste ignore the excluded pairs),
    # the lists shift up by two: the plain ranks 3-5 become 1-3.
    assert (
        got.groupby("user_id")["source"].first().equals(plain.groupby("user_id")["source"].first())
    )
    for user in users:
        was = plain.loc[plain["user_id"] == user, "movie_id"].tolist()
        now = got.loc[got["user_id"] == user, "movie_id"].tolist()
        assert len(now) == 5 and now[:3] == was[2:]


def test_choose_policy_picks_the_best_and_prefers_earlier_on_ties():
    policies = grid_policies(RankingPolicy(min_user_ratings=3), [(0.0, 0), (1.0, 0), (2.0, 0)])
    best, tried = choose_policy(policies, [0.1, 0.3, 0.3])
    assert (best.taste_weight, best.popularity_weight, best.min_user_ratings) == (1.0, 1.0, 3)
    assert [t["ndcg"] for t in tried] == [0.1, 0.3, 0.3]


@pytest.mark.parametrize(
    ("blend_ndcg", "chosen_taste"),
    [(0.303, 0.0), (0.3059, 0.0), (0.3061, 1.0), (0.33, 1.0)],
)
def test_a_blend_is_chosen_only_when_it_beats_most_popular_by_two_percent(blend_ndcg, chosen_taste):
    """The production rule: most-popular (0.30) stays unless a blend reaches 0.306."""
    policies = grid_policies(RankingPolicy(), [(0.0, 0.0), (1.0, 0.0)])
    best, tried = choose_policy(policies, [0.30, blend_ndcg])
    assert best.taste_weight == chosen_taste and best.popularity_weight == 1.0
    assert [t["ndcg"] for t in tried] == [0.30, blend_ndcg]


def test_grid_ndcgs_agree_with_rank_users_and_ranking_metrics(fitted):
    model, ratings = fitted
    f = SVDFactors.from_svd(model)
    rng = np.random.default_rng(0)
    held = rng.random(len(ratings)) < 0.25
    train = Ratings(*(ratings.loc[~held, c].to_numpy() for c in ("user_id", "movie_id", "rating")))
    val = Ratings(*(ratings.loc[held, c].to_numpy() for c in ("user_id", "movie_id", "rating")))
    ((_, tried),) = grid_ndcgs(f, train, [val], RankingPolicy(min_user_ratings=1))
    counts = item_counts(f.raw_iids, train.movies)
    for point in tried:
        policy = RankingPolicy(1.0, point["taste_weight"], point["rating_weight"], 1)
        recs = rank(f, np.unique(val.users), train.users, train.movies, counts, policy, n=10)
        assert point["ndcg"] == pytest.approx(ranking_metrics(recs, val.frame(), 10)["ndcg"])


def _split(ratings, seed=0):
    held = np.random.default_rng(seed).random(len(ratings)) < 0.25
    cols = ("user_id", "movie_id", "rating")
    train = Ratings(*(ratings.loc[~held, c].to_numpy() for c in cols))
    test = Ratings(*(ratings.loc[held, c].to_numpy() for c in cols))
    return train, test


def test_ranking_eval_equals_rank_users_plus_ranking_metrics(fitted):
    model, ratings = fitted
    f = SVDFactors.from_svd(model)
    train, test = _split(ratings, seed=1)
    # Add a test user the model never saw: gets the popular list in every policy.
    test = Ratings(
        np.append(test.users, 5_000), np.append(test.movies, test.movies[0]), test.ratings
    )
    policies = [
        RankingPolicy(min_user_ratings=0),  # SVD estimate only
        RankingPolicy.popularity_only(),
        RankingPolicy(1.0, 1.0, 0.05, min_user_ratings=40),  # some users cold
    ]
    counts = item_counts(f.raw_iids, train.movies)
    got = ranking_eval(f, train, test, policies)
    for policy, metrics in zip(policies, got, strict=True):
        recs = rank(f, np.unique(test.users), train.users, train.movies, counts, policy)
        expected = ranking_metrics(recs, test.frame(), 10)
        for name in ("precision", "recall", "ndcg"):
            assert metrics[name] == pytest.approx(expected[name]), (policy, name)


def test_baseline_als_equals_surprise_baseline_only(fitted):
    _, ratings = fitted
    data = Dataset.load_from_df(
        ratings[["user_id", "movie_id", "rating"]], Reader(rating_scale=(1, 5))
    )
    trainset = data.build_full_trainset()
    expected = BaselineOnly(verbose=False).fit(trainset)
    users = np.array([trainset.to_inner_uid(u) for u in ratings["user_id"]])
    items = np.array([trainset.to_inner_iid(m) for m in ratings["movie_id"]])
    bu, bi = baseline_als(
        users,
        items,
        ratings["rating"].to_numpy(dtype=float),
        trainset.n_users,
        trainset.n_items,
        trainset.global_mean,
    )
    np.testing.assert_allclose(bu, expected.bu, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bi, expected.bi, rtol=1e-10, atol=1e-12)


def test_ranking_evals_equal_one_ranking_eval_per_test_set(fitted):
    model, ratings = fitted
    f = SVDFactors.from_svd(model)
    train, held = _split(ratings, seed=2)
    # Two test sets with different users (one only in the second) and an unknown user.
    first = held.take(np.flatnonzero(held.users % 3 != 0))
    second = Ratings(
        np.append(held.users, 5_000), np.append(held.movies, held.movies[0]), held.ratings
    )
    policies = [RankingPolicy(min_user_ratings=0), RankingPolicy(1.0, 1.0, 0.05, 10)]
    scope = EvalScope(block_size=7)
    together = ranking_evals(f, train, [first, second], policies, scope=scope)
    for test, got in zip([first, second], together, strict=True):
        alone = ranking_eval(f, train, test, policies, block_size=7)
        for a, b in zip(got, alone, strict=True):
            assert a == pytest.approx(b, rel=1e-12, abs=0)  # summation order only
    base = RankingPolicy(min_user_ratings=3)
    grids = grid_ndcgs(f, train, [first, second], base)
    for (policy, tried), test in zip(grids, [first, second], strict=True):
        ((expected_policy, expected_tried),) = grid_ndcgs(f, train, [test], base)
        assert policy == expected_policy
        assert [t["ndcg"] for t in tried] == pytest.approx([t["ndcg"] for t in expected_tried])


def test_ranking_on_a_user_sample_equals_ranking_those_users_alone(fitted):
    """`max_users`: the metrics of a seeded sample are those of its users' test ratings."""
    model, ratings = fitted
    f = SVDFactors.from_svd(model)
    train, held = _split(ratings, seed=3)
    policies = [RankingPolicy(min_user_ratings=0), RankingPolicy(1.0, 1.0, 0.05, 10)]
    everyone = np.unique(held.users)
    sample = EvalScope(max_users=7, seed=5).sample(everyone)
    assert sample.size == 7 and set(sample) < set(everyone)
    assert np.array_equal(sample, EvalScope(max_users=7, seed=5).sample(everyone))  # seeded
    assert np.array_equal(EvalScope(max_users=everyone.size).sample(everyone), everyone)
    sampled = ranking_eval(f, train, held, policies, max_users=7, seed=5)
    alone = ranking_eval(f, train, held.take(np.flatnonzero(np.isin(held.users, sample))), policies)
    assert sampled == alone
    assert sampled != ranking_eval(f, train, held, policies)
