"""CompactDataset/CompactTrainset are Surprise's structures, bit for bit, without the tuples."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from surprise import BaselineOnly, Dataset, Reader

from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.ml.compact_data import CompactDataset
from recsys_assets.ml.cross_validation import cross_validate_svd
from recsys_assets.ml.training import SVDParams, fit_svd, training_error

PARAMS = SVDParams(n_epochs=3, n_factors=8)


@pytest.fixture(scope="module")
def pair() -> tuple[Dataset, CompactDataset]:
    _, ratings = generate_demo_ratings(n_users=150, n_movies=200, n_ratings=6000, seed=4)
    # Shuffled, with compact dtypes, as ratings_df delivers them: order decides inner ids.
    df = ratings.sample(frac=1.0, random_state=2)[["user_id", "movie_id", "rating"]]
    compact = df.astype({"user_id": np.int32, "movie_id": np.int32, "rating": np.float32})
    reader = Reader(rating_scale=(1, 5))
    return Dataset.load_from_df(df, reader), CompactDataset.from_df(compact, reader)


def test_same_raw_ratings_and_trainset(pair):
    surprise_ds, compact_ds = pair
    assert len(compact_ds) == len(surprise_ds.raw_ratings)
    assert compact_ds.raw_ratings == surprise_ds.raw_ratings
    a, b = surprise_ds.build_full_trainset(), compact_ds.build_full_trainset()
    assert (a.n_users, a.n_items, a.n_ratings) == (b.n_users, b.n_items, b.n_ratings)
    assert a._raw2inner_id_users == b._raw2inner_id_users
    assert a._raw2inner_id_items == b._raw2inner_id_items
    assert list(a.all_ratings()) == list(b.all_ratings())
    assert dict(a.ur) == dict(b.ur) and dict(a.ir) == dict(b.ir)
    assert a.global_mean == b.global_mean
    assert not b.knows_user("UKN__1") and not b.knows_user(b.n_users) and b.knows_user(0)


def test_same_fitted_model_and_predictions(pair):
    surprise_ds, compact_ds = pair
    a, b = surprise_ds.build_full_trainset(), compact_ds.build_full_trainset()
    ma, mb = fit_svd(a, PARAMS), fit_svd(b, PARAMS)
    for attr in ("bu", "bi", "pu", "qi"):
        assert np.array_equal(getattr(ma, attr), getattr(mb, attr))
    assert training_error(ma, a) == training_error(mb, b)
    raw_u, raw_i = int(compact_ds.users[0]), int(compact_ds.items[0])
    assert ma.predict(raw_u, raw_i).est == mb.predict(raw_u, raw_i).est
    assert ma.predict(10**9, raw_i).est == mb.predict(10**9, raw_i).est
    # Other Surprise algorithms read ur/ir, which are built on demand.
    ba, bb = BaselineOnly(verbose=False).fit(a), BaselineOnly(verbose=False).fit(b)
    assert np.array_equal(ba.bu, bb.bu) and np.array_equal(ba.bi, bb.bi)


def test_same_cross_validation_report(pair):
    # The full report (fold fits, inner weight-selection models, baselines, ranking) on the
    # compact dataset equals Surprise's, without materializing per-rating tuples.
    surprise_ds, compact_ds = pair
    fresh = CompactDataset(
        compact_ds.users, compact_ds.items, compact_ds.ratings, compact_ds.reader
    )
    a = cross_validate_svd(surprise_ds, PARAMS, n_folds=4, seed=42, n_jobs=1)
    b = cross_validate_svd(fresh, PARAMS, n_folds=4, seed=42, n_jobs=1)
    figures = [c for c in a.columns if not c.endswith("_time")]
    pd.testing.assert_frame_equal(a[figures], b[figures])
    assert fresh._raw_ratings is None


def test_pickles_as_arrays(pair):
    surprise_ds, compact_ds = pair
    compact_ds.raw_ratings  # noqa: B018 - materialized, but must not be pickled
    assert len(pickle.dumps(compact_ds)) < len(pickle.dumps(surprise_ds)) / 3
    trainset = compact_ds.build_full_trainset()
    model = fit_svd(trainset, PARAMS)
    trainset.ur  # noqa: B018
    restored = pickle.loads(pickle.dumps(model))
    assert restored.trainset._ur is None
    u, i = int(compact_ds.users[5]), int(compact_ds.items[5])
    assert restored.predict(u, i).est == model.predict(u, i).est
