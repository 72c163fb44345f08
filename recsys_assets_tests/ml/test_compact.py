"""A stripped SVD predicts exactly like the full one and pickles much smaller."""

from __future__ import annotations

import pickle

import pytest
from surprise import SVD, Dataset, Reader

from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.ml.compact import PredictionTrainset, strip_svd
from recsys_assets.ml.factors import SVDFactors


@pytest.fixture(scope="module")
def model_and_ratings():
    _, ratings = generate_demo_ratings(n_users=150, n_movies=120, n_ratings=6000, seed=5)
    data = Dataset.load_from_df(
        ratings[["user_id", "movie_id", "rating"]], Reader(rating_scale=(1, 5))
    )
    return SVD(n_factors=8, n_epochs=10, random_state=0).fit(data.build_full_trainset()), ratings


def test_stripped_model_predicts_like_the_full_one(model_and_ratings):
    model, ratings = model_and_ratings
    stripped = pickle.loads(pickle.dumps(strip_svd(model), protocol=5))
    assert isinstance(stripped.trainset, PredictionTrainset)
    users = [*ratings["user_id"].unique()[:20].tolist(), 99_999]  # 99_999: unknown user
    movies = [*ratings["movie_id"].unique()[:20].tolist(), 88_888]  # unknown movie
    for u in users:
        for m in movies:
            full, small = model.predict(u, m), stripped.predict(u, m)
            assert small.est == full.est
            assert small.details == full.details
    # The original keeps its full trainset.
    assert hasattr(model.trainset, "ur")


def test_stripped_model_is_smaller_and_keeps_serving_data(model_and_ratings):
    model, ratings = model_and_ratings
    stripped = strip_svd(model)
    assert len(pickle.dumps(stripped, protocol=5)) < 0.7 * len(pickle.dumps(model, protocol=5))
    ts = stripped.trainset
    assert ts.item_counts.sum() == len(ratings) == ts.n_ratings
    u = ratings["user_id"].iloc[0]
    rated = {model.trainset.to_raw_iid(i) for i in ts.rated_items(ts.to_inner_uid(u))}
    assert rated == set(ratings.loc[ratings["user_id"] == u, "movie_id"])
    with pytest.raises(ValueError, match="not part of the trainset"):
        ts.to_inner_uid(99_999)
    # Vectorized scoring reads the same arrays from either model.
    a, b = SVDFactors.from_svd(model), SVDFactors.from_svd(stripped)
    assert (a.raw_uids == b.raw_uids).all() and (a.raw_iids == b.raw_iids).all()
    assert (a.global_mean, a.lower, a.upper) == (b.global_mean, b.lower, b.upper)


def test_strip_refuses_an_unfitted_model():
    with pytest.raises(ValueError, match="not fitted"):
        strip_svd(SVD())


def test_strip_reads_an_array_backed_trainset_without_its_tuples(model_and_ratings):
    # The project's CompactDataset trainsets: the same serving data, from the arrays.
    from recsys_assets.ml.compact_data import CompactDataset

    _, ratings = model_and_ratings
    frame = ratings[["user_id", "movie_id", "rating"]]
    reader = Reader(rating_scale=(1, 5))
    surprise_ts = Dataset.load_from_df(frame, reader).build_full_trainset()
    array_ts = CompactDataset.from_df(frame, reader).build_full_trainset()
    from_tuples, from_arrays = PredictionTrainset(surprise_ts), PredictionTrainset(array_ts)
    assert array_ts._ur is None  # ur was never built
    for name in ("user_indptr", "user_items", "item_counts"):
        ours, theirs = getattr(from_arrays, name), getattr(from_tuples, name)
        assert ours.dtype == theirs.dtype and (ours == theirs).all(), name
    assert from_arrays._raw2inner_id_users == from_tuples._raw2inner_id_users
    assert from_arrays._raw2inner_id_items == from_tuples._raw2inner_id_items


def test_model_pickled_before_the_rename_still_loads(model_and_ratings):
    """Saved models name the stand-in `recsys_assets.ml.compact.CompactTrainset`."""
    model, ratings = model_and_ratings
    stripped = strip_svd(model)
    # Pickle it under the former class name, exactly as models saved before the rename are.
    PredictionTrainset.__qualname__ = "CompactTrainset"
    try:
        old = pickle.dumps(stripped, protocol=5)
    finally:
        PredictionTrainset.__qualname__ = "PredictionTrainset"
    assert b"CompactTrainset" in old and b"PredictionTrainset" not in old
    loaded = pickle.loads(old)
    assert isinstance(loaded.trainset, PredictionTrainset)
    u, m = ratings["user_id"].iloc[0], ratings["movie_id"].iloc[0]
    assert loaded.predict(u, m).est == model.predict(u, m).est
