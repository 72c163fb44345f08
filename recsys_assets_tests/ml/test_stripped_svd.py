"""A stripped SVD predicts exactly like the full one and pickles much smaller."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from surprise import SVD, Dataset, Reader

from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.ml.datasets import CompactDataset, CompactTrainset
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.stripped_svd import PredictionTrainset, strip_svd
from recsys_assets.ml.training import SVDParams, fit_svd


@pytest.fixture(scope="module")
def model_and_ratings():
    _, ratings = generate_demo_ratings(n_users=150, n_movies=120, n_ratings=6000, seed=5)
    data = CompactDataset.from_df(
        ratings[["user_id", "movie_id", "rating"]], Reader(rating_scale=(1, 5))
    )
    return fit_svd(data.build_full_trainset(), SVDParams(n_factors=8, n_epochs=10)), ratings


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
    assert isinstance(model.trainset, CompactTrainset)


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


def test_serving_data_equals_surprises_trainset(model_and_ratings):
    # Reference: the same ratings through Surprise's own Trainset (per-user lists `ur`).
    _, ratings = model_and_ratings
    frame = ratings[["user_id", "movie_id", "rating"]]
    reader = Reader(rating_scale=(1, 5))
    theirs = Dataset.load_from_df(frame, reader).build_full_trainset()
    ours = PredictionTrainset(CompactDataset.from_df(frame, reader).build_full_trainset())
    lengths = [len(theirs.ur[u]) for u in range(theirs.n_users)]
    items = [i for u in range(theirs.n_users) for i, _ in theirs.ur[u]]
    np.testing.assert_array_equal(ours.user_indptr, np.concatenate([[0], np.cumsum(lengths)]))
    np.testing.assert_array_equal(ours.user_items, items)
    np.testing.assert_array_equal(ours.item_counts, np.bincount(items, minlength=theirs.n_items))
    assert ours._raw2inner_id_users == theirs._raw2inner_id_users
    assert ours._raw2inner_id_items == theirs._raw2inner_id_items


def test_strip_refuses_a_model_fitted_on_surprises_trainset(model_and_ratings):
    _, ratings = model_and_ratings
    data = Dataset.load_from_df(
        ratings[["user_id", "movie_id", "rating"]], Reader(rating_scale=(1, 5))
    )
    model = SVD(n_factors=2, n_epochs=1).fit(data.build_full_trainset())
    with pytest.raises(TypeError, match="fitted on a CompactTrainset .* not on a Trainset"):
        strip_svd(model)


def test_a_champion_saved_before_the_module_rename_still_loads(model_and_ratings, tmp_path):
    """Models saved when `PredictionTrainset` lived in `ml.compact` load through the store
    (the gates and serving need the champion before any retrain); a class that is gone is a
    clear "retrain" error, not a bare ModuleNotFoundError."""
    import sys

    from recsys_assets.ml import stripped_svd
    from recsys_assets.ml.artifacts import ArtifactIntegrityError, ArtifactStore

    model, ratings = model_and_ratings
    shipped = strip_svd(model)
    store = ArtifactStore(tmp_path)
    # Pickle it as the old code did: the class under its old module path.
    sys.modules["recsys_assets.ml.compact"] = stripped_svd
    PredictionTrainset.__module__ = "recsys_assets.ml.compact"
    try:
        store.save(shipped, {}, promote=True)
        old_path = pickle.dumps(PredictionTrainset, protocol=5)
    finally:
        PredictionTrainset.__module__ = stripped_svd.__name__
        del sys.modules["recsys_assets.ml.compact"]
    assert b"recsys_assets.ml.compact" in old_path
    loaded, _ = store.load_latest()
    assert isinstance(loaded.trainset, PredictionTrainset)
    u, m = ratings["user_id"].iloc[0], ratings["movie_id"].iloc[0]
    assert loaded.predict(u, m).est == model.predict(u, m).est

    class Gone:
        pass

    Gone.__module__, Gone.__qualname__ = "recsys_assets.ml.no_such_module", "Gone"
    sys.modules["recsys_assets.ml.no_such_module"] = type(sys)("recsys_assets.ml.no_such_module")
    sys.modules["recsys_assets.ml.no_such_module"].Gone = Gone
    try:
        store.save(Gone(), {}, promote=True)
    finally:
        del sys.modules["recsys_assets.ml.no_such_module"]
    with pytest.raises(ArtifactIntegrityError, match="retrain it with `recsys run`"):
        store.load_latest()
