"""Vectorized top-N must agree with ``SVD.predict`` pair by pair and with a brute-force top-N."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from surprise import SVD, Dataset, Reader

from recsys_assets.ml.arrays import unique
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.ranking import top_k
from recsys_assets.ml.ranking.keys import popularity_feature, unit_rows
from recsys_assets.ml.ranking.policy import RankingPolicy
from recsys_assets.ml.ranking.top_k import BlendRanking, blend_lists, seen_matrix


def top_n(
    f: SVDFactors,
    users,
    rated_users,
    rated_movies,
    n: int = 50,
    block_size: int = 2048,
    n_threads: int | None = None,
    policy: RankingPolicy | None = None,
    popularity: np.ndarray | None = None,
    taste: np.ndarray | None = None,
) -> pd.DataFrame:
    """The blend's lists of every user in ``users`` (unknown ones too, by ``mu + bi``); the
    defaults rank by the estimate alone."""
    users = unique(np.asarray(users, dtype=np.int64))
    popularity = np.zeros(f.n_items) if popularity is None else popularity
    unit = unit_rows(np.asarray(f.qi, dtype=np.float64)) if taste is not None else None
    blend = BlendRanking(f, policy or RankingPolicy(), popularity, taste, unit)
    seen = seen_matrix(users, f.raw_iids, rated_users, rated_movies)
    return blend_lists(blend, users, seen, n, block_size, n_threads)


N_USERS, N_MOVIES, N_RATINGS = 60, 80, 1500
UNKNOWN_USER = 10_001  # not in the trainset: scored as mu + bi


def make_ratings(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # Non-contiguous raw ids so inner/raw confusion would show up.
    df = pd.DataFrame(
        {
            "user_id": rng.integers(1, N_USERS + 1, N_RATINGS).astype(np.int64) * 7,
            "movie_id": rng.integers(1, N_MOVIES + 1, N_RATINGS).astype(np.int64) * 3 + 100,
            "rating": rng.integers(1, 6, N_RATINGS),
        }
    )
    return df.drop_duplicates(["user_id", "movie_id"]).reset_index(drop=True)


def fit(df: pd.DataFrame) -> SVD:
    data = Dataset.load_from_df(df[["user_id", "movie_id", "rating"]], Reader(rating_scale=(1, 5)))
    return SVD(n_factors=10, n_epochs=5, random_state=0).fit(data.build_full_trainset())


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return make_ratings()


@pytest.fixture(scope="module")
def model(ratings) -> SVD:
    return fit(ratings)


@pytest.fixture(scope="module")
def current_ratings(ratings) -> pd.DataFrame:
    """The 'current' ratings table: training ratings plus activity the model never saw."""
    extra = pd.DataFrame(
        {
            # the unknown (new) user rated two known movies and one movie unknown to the model
            "user_id": [UNKNOWN_USER, UNKNOWN_USER, UNKNOWN_USER, 7],
            "movie_id": [103, 106, 99_999, 99_998],
            "rating": [5, 4, 3, 2],
        }
    )
    return pd.concat([ratings, extra], ignore_index=True)


def brute_force(model: SVD, user: int, rated: set[int], n: int) -> list[tuple[int, float, float]]:
    """(movie, unclipped, clipped) for the true top-n via predict over all unrated movies."""
    ts = model.trainset
    rows = []
    for inner in ts.all_items():
        movie = ts.to_raw_iid(inner)
        if movie in rated:
            continue
        unclipped = model.predict(user, movie, clip=False).est
        rows.append((movie, unclipped, model.predict(user, movie).est))
    rows.sort(key=lambda r: (-r[1], r[0]))
    return rows[:n]


def assert_matches_brute_force(model: SVD, result: pd.DataFrame, users, current, n: int) -> int:
    """Check every user's rows against brute force; return how many lists matched exactly."""
    exact = 0
    for user in users:
        got = result[result.user_id == user].sort_values("rank")
        rated = set(current.movie_id[current.user_id == user].tolist())
        expected = brute_force(model, user, rated, n)
        assert len(got) == len(expected)
        assert got["rank"].tolist() == list(range(1, len(expected) + 1))
        assert not rated.intersection(got.movie_id.tolist())
        # Scores are what predict() returns, for the very pairs returned.
        np.testing.assert_allclose(
            got.score.to_numpy(),
            [model.predict(user, m).est for m in got.movie_id],
            rtol=1e-12,
            atol=1e-12,
        )
        # Same ranked values as the true top-n (robust to last-ulp ties) ...
        np.testing.assert_allclose(
            [model.predict(user, m, clip=False).est for m in got.movie_id],
            [e[1] for e in expected],
            rtol=1e-12,
            atol=1e-12,
        )
        # ... and the same movies in the same order unless near-ties make order arbitrary.
        vals = np.array([e[1] for e in expected])
        near_tie = vals.size > 1 and np.min(-np.diff(vals)) < 1e-9
        if not near_tie:
            assert got.movie_id.tolist() == [e[0] for e in expected]
            exact += 1
    return exact


def test_from_svd_mirrors_the_model(model):
    f = SVDFactors.from_svd(model)
    ts = model.trainset
    assert f.raw_uids.dtype == np.int64 and f.raw_iids.dtype == np.int64
    assert f.raw_uids.shape == (ts.n_users,) and f.raw_iids.shape == (ts.n_items,)
    for inner in range(ts.n_users):
        assert ts.to_inner_uid(int(f.raw_uids[inner])) == inner
    for inner in range(ts.n_items):
        assert ts.to_inner_iid(int(f.raw_iids[inner])) == inner
    assert (f.lower, f.upper) == (1.0, 5.0)
    assert f.global_mean == pytest.approx(ts.global_mean)
    np.testing.assert_array_equal(f.pu, model.pu)
    np.testing.assert_array_equal(f.bi, model.bi)


def test_scores_and_rankings_equal_predict_for_all_users(model, current_ratings):
    users = np.unique(np.append(current_ratings.user_id.to_numpy(), UNKNOWN_USER))
    users = np.unique(users)
    n = 10
    result = top_n(
        SVDFactors.from_svd(model),
        users,
        current_ratings.user_id.to_numpy(),
        current_ratings.movie_id.to_numpy(),
        n=n,
    )
    assert list(result.columns) == ["user_id", "movie_id", "rank", "score"]
    assert result.dtypes.astype(str).tolist() == ["int64", "int64", "int64", "float64"]
    assert set(result.user_id) == set(users.tolist())
    exact = assert_matches_brute_force(model, result, users, current_ratings, n)
    assert exact >= len(users) - 2  # continuous scores: real ties are rare


def test_rated_movies_never_recommended(model, current_ratings):
    users = np.unique(current_ratings.user_id.to_numpy())
    result = top_n(
        SVDFactors.from_svd(model),
        users,
        current_ratings.user_id.to_numpy(),
        current_ratings.movie_id.to_numpy(),
        n=1000,
    )
    pairs = result.merge(current_ratings, on=["user_id", "movie_id"], how="inner")
    assert pairs.empty
    assert not result.duplicated(["user_id", "movie_id"]).any()


def test_unknown_user_is_scored_mu_plus_bi(model, current_ratings):
    f = SVDFactors.from_svd(model)
    result = top_n(
        f,
        np.array([UNKNOWN_USER]),
        current_ratings.user_id.to_numpy(),
        current_ratings.movie_id.to_numpy(),
        n=5,
    )
    assert len(result) == 5
    for row in result.itertuples():
        inner = model.trainset.to_inner_iid(row.movie_id)
        assert row.score == pytest.approx(model.trainset.global_mean + model.bi[inner], abs=1e-12)
        assert row.movie_id not in (103, 106)  # the new user's own ratings are excluded
    assert_matches_brute_force(model, result, [UNKNOWN_USER], current_ratings, 5)


def test_n_larger_than_available_movies(model, current_ratings):
    f = SVDFactors.from_svd(model)
    users = np.array([7, 14, UNKNOWN_USER])
    result = top_n(
        f, users, current_ratings.user_id.to_numpy(), current_ratings.movie_id.to_numpy(), n=500
    )
    for user in users:
        rated_known = set(current_ratings.movie_id[current_ratings.user_id == user]) & set(
            f.raw_iids.tolist()
        )
        got = result[result.user_id == user]
        assert len(got) == f.n_items - len(rated_known)
        assert got["rank"].tolist() == list(range(1, len(got) + 1))
    assert_matches_brute_force(model, result, users, current_ratings, 500)


def test_user_who_rated_everything_gets_nothing(model):
    f = SVDFactors.from_svd(model)
    everything = f.raw_iids
    result = top_n(f, np.array([7, 14]), np.full(everything.size, 7), everything, n=5)
    assert set(result.user_id) == {14}
    assert len(result) == 5


def test_blocks_give_the_same_result_as_one_block(model, current_ratings):
    f = SVDFactors.from_svd(model)
    users = np.append(np.unique(current_ratings.user_id.to_numpy()), [UNKNOWN_USER, 424242])
    args = (f, users, current_ratings.user_id.to_numpy(), current_ratings.movie_id.to_numpy())
    one = top_n(*args, n=7, block_size=10_000)
    for bs in (1, 7, 13):
        pd.testing.assert_frame_equal(top_n(*args, n=7, block_size=bs), one)
        # Blocks side by side on threads (one BLAS thread each), and one after another.
        for threads in (1, 3):
            pd.testing.assert_frame_equal(top_n(*args, n=7, block_size=bs, n_threads=threads), one)


def test_users_are_deduplicated_and_sorted(model):
    f = SVDFactors.from_svd(model)
    result = top_n(f, np.array([14, 7, 14]), np.array([], dtype=np.int64), np.array([]), n=3)
    assert result.user_id.tolist() == [7, 7, 7, 14, 14, 14]


def test_empty_users_returns_typed_empty_frame(model):
    result = top_n(SVDFactors.from_svd(model), np.array([], dtype=np.int64), [], [], n=5)
    assert result.empty
    assert list(result.columns) == ["user_id", "movie_id", "rank", "score"]
    assert result.dtypes.astype(str).tolist() == ["int64", "int64", "int64", "float64"]


def test_ranks_by_unclipped_estimate_and_reports_clipped_score(ratings):
    model = fit(ratings)
    # Push several movies far above the scale so predict() clips them all to 5.0; their
    # order must still follow the unclipped estimate.
    boosted = [model.trainset.to_inner_iid(m) for m in (103, 106, 109, 112)]
    for k, inner in enumerate(boosted):
        model.bi[inner] += 10.0 + k
    result = top_n(SVDFactors.from_svd(model), np.array([UNKNOWN_USER, 14]), [], [], n=4)
    for user in (UNKNOWN_USER, 14):
        got = result[result.user_id == user]
        assert got.score.tolist() == [5.0, 5.0, 5.0, 5.0]
        assert got.movie_id.tolist() == [112, 109, 106, 103]
        assert [model.predict(user, m).est for m in got.movie_id] == got.score.tolist()
    assert_matches_brute_force(model, result, [UNKNOWN_USER, 14], ratings.iloc[:0], 4)


def test_exact_ties_broken_by_movie_id_even_across_the_cut(ratings):
    model = fit(ratings)
    # Five movies with identical, top bi tie exactly for an unknown user (mu + bi); with
    # n=3 the cut falls inside the tie, where argpartition alone would pick arbitrarily.
    tied = [340, 103, 211, 160, 199]
    for m in tied:
        model.bi[model.trainset.to_inner_iid(m)] = 1.5
    f = SVDFactors.from_svd(model)
    for n in (3, 5, 7):
        got = top_n(f, np.array([UNKNOWN_USER]), [], [], n=n)
        top = got.iloc[: min(n, 5)]
        assert top.movie_id.tolist() == sorted(tied)[: min(n, 5)]
        assert top.score.nunique() == 1  # genuinely tied, so only the movie id orders them
        assert_matches_brute_force(model, got, [UNKNOWN_USER], ratings.iloc[:0], n)


def test_float32_factors_are_close(model, current_ratings):
    f64 = SVDFactors.from_svd(model)
    f32 = SVDFactors.from_svd(model)
    f32.pu, f32.qi = f32.pu.astype(np.float32), f32.qi.astype(np.float32)
    users = np.unique(current_ratings.user_id.to_numpy())
    args = (users, current_ratings.user_id.to_numpy(), current_ratings.movie_id.to_numpy())
    a, b = top_n(f64, *args, n=1000), top_n(f32, *args, n=1000)
    merged = a.merge(b, on=["user_id", "movie_id"])
    assert len(merged) == len(a) == len(b)
    assert merged.score_y.dtype == np.float64
    np.testing.assert_allclose(merged.score_x, merged.score_y, atol=1e-5)


def test_rejects_bad_inputs(model):
    from recsys_assets.ml.ranking import ShippedModel, rank_users

    f = SVDFactors.from_svd(model)
    shipped = ShippedModel(f, np.zeros(f.n_items), RankingPolicy())
    with pytest.raises(ValueError, match="same length"):
        rank_users(shipped, np.array([7]), (np.array([7, 7]), np.array([103])))
    with pytest.raises(ValueError, match="n must be"):
        rank_users(shipped, np.array([7]), (np.array([]), np.array([])), n=0)
    with pytest.raises(TypeError, match="surprise.SVD"):
        SVDFactors.from_svd(object())


def test_non_integer_raw_ids_are_refused():
    df = pd.DataFrame({"user_id": ["a", "b"], "movie_id": ["x", "y"], "rating": [1, 5]})
    data = Dataset.load_from_df(df, Reader(rating_scale=(1, 5)))
    model = SVD(n_factors=2, n_epochs=1, random_state=0).fit(data.build_full_trainset())
    with pytest.raises(TypeError, match="not an integer"):
        SVDFactors.from_svd(model)


@pytest.mark.parametrize("offset", [0, 10**12, -(10**9)], ids=["dense", "huge", "negative"])
def test_raw_id_lookup_dense_and_sparse(offset):
    from recsys_assets.ml.arrays import lookup

    rng = np.random.default_rng(3)
    raw = rng.choice(5000, size=300, replace=False).astype(np.int64) + offset
    query = np.concatenate([raw[::-1], rng.integers(-10, 6000, 500) + offset, [-(2**62), 2**62]])
    expected = {int(r): i for i, r in enumerate(raw)}
    got = lookup(raw, query)
    assert got.tolist() == [expected.get(int(q), -1) for q in query]


def test_huge_raw_ids_match_brute_force(ratings):
    # Ids far outside a dense table's range take the binary-search path end to end.
    df = ratings.assign(user_id=ratings.user_id * 10**11, movie_id=ratings.movie_id + 10**15)
    model = fit(df)
    users = np.unique(df.user_id.to_numpy())[:8]
    users = np.append(users, 5 * 10**17)  # unknown user
    result = top_n(
        SVDFactors.from_svd(model), users, df.user_id.to_numpy(), df.movie_id.to_numpy(), n=6
    )
    assert set(result.user_id) == set(users.tolist())
    assert_matches_brute_force(model, result, users, df, 6)


def test_float32_candidates_equal_the_exact_float64_pass(model, current_ratings, monkeypatch):
    f = SVDFactors.from_svd(model)
    users = np.unique(current_ratings.user_id.to_numpy())
    args = (users, current_ratings.user_id.to_numpy(), current_ratings.movie_id.to_numpy())
    fast = top_n(f, *args, n=10, block_size=7)
    monkeypatch.setattr(top_k, "CANDIDATE_MARGIN", 10**9)  # no candidate pass: all float64
    exact = top_n(f, *args, n=10, block_size=7)
    pd.testing.assert_frame_equal(fast, exact)


def test_ties_wider_than_the_candidate_margin_fall_back_to_exact(ratings):
    model = fit(ratings)
    inner = list(range(model.trainset.n_items))[: 3 * top_k.CANDIDATE_MARGIN]
    tied = sorted(model.trainset.to_raw_iid(i) for i in inner)
    for i in inner:
        model.bi[i] = 1.5
    got = top_n(SVDFactors.from_svd(model), np.array([UNKNOWN_USER]), [], [], n=3)
    assert got.movie_id.tolist() == tied[:3]


def test_sampled_threshold_selection_equals_argpartition():
    from recsys_assets.ml.ranking.top_k import top_m_columns

    rng = np.random.default_rng(5)
    scores = rng.normal(size=(64, 20_000)).astype(np.float32)
    scores[3, :] = -np.inf  # a user who rated everything
    scores[4, ::2] = -np.inf  # and one who rated half
    scores[5, :] = 1.0  # a flat row: everything tied
    m = 66
    got = top_m_columns(scores, m)
    want = np.argpartition(scores, scores.shape[1] - m, axis=1)[:, -m:]
    assert got.shape == (64, m)
    for r in range(64):
        if r in (3, 5):  # ties: any m columns are a correct answer, but distinct ones
            assert len(set(got[r].tolist())) == m
            continue
        assert set(got[r].tolist()) == set(want[r].tolist())


@pytest.mark.parametrize("taste", [True, False])
@pytest.mark.parametrize("weight", [0.0, 0.05, 1.0])
def test_reranked_float32_candidates_equal_the_exact_float64_pass(
    model, current_ratings, monkeypatch, taste, weight
):
    """The shipped blend's order (bonus + taste + weight * estimate) with and without the
    float32 candidate pass: same movies, ranks and scores, unknown users included."""
    f = SVDFactors.from_svd(model)
    users = np.unique(np.append(current_ratings.user_id.to_numpy(), UNKNOWN_USER))
    rated = (current_ratings.user_id.to_numpy(), current_ratings.movie_id.to_numpy())
    rng = np.random.default_rng(3)
    kwargs = {
        "popularity": popularity_feature(rng.integers(0, 50, f.n_items).astype(float)),
        "policy": RankingPolicy(1.0, 1.0 if taste else 0.0, weight),
    }
    if taste:
        kwargs["taste"] = unit_rows(rng.normal(size=(users.size, f.qi.shape[1])))
    fast = top_n(f, users, *rated, n=10, block_size=7, **kwargs)
    threaded = top_n(f, users, *rated, n=10, block_size=7, n_threads=3, **kwargs)
    monkeypatch.setattr(top_k, "CANDIDATE_MARGIN", 10**9)  # no candidate pass: all float64
    exact = top_n(f, users, *rated, n=10, block_size=7, n_threads=1, **kwargs)
    pd.testing.assert_frame_equal(fast, exact)
    pd.testing.assert_frame_equal(threaded, exact)
    assert set(fast.user_id) == set(users.tolist())
