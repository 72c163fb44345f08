"""CompactDataset/CompactTrainset hold Surprise's structures, bit for bit, as arrays."""

from __future__ import annotations

import pickle
from itertools import chain

import numpy as np
import pytest
from surprise import Dataset, Reader, Trainset

from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.ml.datasets import CompactDataset, CompactTrainset
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


def _flat(trainset: Trainset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Surprise trainset's ratings in `all_ratings()` order, from its `ur` (the reference)."""
    ur = trainset.ur
    lengths = [len(ur[u]) for u in range(trainset.n_users)]
    users = np.repeat(np.arange(trainset.n_users), lengths)
    flat = np.fromiter(chain.from_iterable(chain.from_iterable(ur.values())), np.float64)
    return users, flat[0::2].astype(np.int64), flat[1::2]


def _assert_same_trainset(ours: CompactTrainset, theirs: Trainset) -> None:
    assert (ours.n_users, ours.n_items, ours.n_ratings, ours.rating_scale) == (
        theirs.n_users,
        theirs.n_items,
        theirs.n_ratings,
        theirs.rating_scale,
    )
    # Same ids in the same order: the id maps' insertion order is the inner id order.
    assert list(ours._raw2inner_id_users.items()) == list(theirs._raw2inner_id_users.items())
    assert list(ours._raw2inner_id_items.items()) == list(theirs._raw2inner_id_items.items())
    for a, b in zip(ours.arrays(), _flat(theirs), strict=True):
        np.testing.assert_array_equal(a, b)
    assert list(ours.all_ratings()) == list(theirs.all_ratings())
    assert ours.global_mean == theirs.global_mean


def test_same_trainset(pair):
    surprise_ds, compact_ds = pair
    assert len(compact_ds) == len(surprise_ds.raw_ratings)
    b = compact_ds.build_full_trainset()
    _assert_same_trainset(b, surprise_ds.build_full_trainset())
    assert not b.knows_user("UKN__1") and not b.knows_user(b.n_users) and b.knows_user(0)


def test_trainset_of_a_subset_equals_surprises(pair):
    surprise_ds, compact_ds = pair
    raw = surprise_ds.raw_ratings
    index = np.random.default_rng(4).permutation(len(raw))[: len(raw) * 2 // 3]
    _assert_same_trainset(
        compact_ds.trainset_of(index), surprise_ds.construct_trainset([raw[i] for i in index])
    )


def test_rating_arrays_are_the_raw_ratings(pair):
    surprise_ds, compact_ds = pair
    everything = compact_ds.rating_arrays()
    assert everything.users.dtype == everything.movies.dtype == np.int64
    assert everything.ratings.dtype == np.float64
    columns = (everything.users, everything.movies, everything.ratings)
    triples = zip(*(c.tolist() for c in columns), strict=True)
    assert [(u, i, r, None) for u, i, r in triples] == surprise_ds.raw_ratings


def test_same_fitted_model_and_predictions(pair):
    surprise_ds, compact_ds = pair
    a, b = surprise_ds.build_full_trainset(), compact_ds.build_full_trainset()
    ma, mb = PARAMS.build().fit(a), fit_svd(b, PARAMS)
    for attr in ("bu", "bi", "pu", "qi"):
        assert np.array_equal(getattr(ma, attr), getattr(mb, attr))
    err = [ma.predict(*r[:2]).est - r[2] for r in surprise_ds.raw_ratings]
    rmse, mae = training_error(mb, b)
    assert rmse == pytest.approx(np.sqrt(np.mean(np.square(err))), rel=1e-12)
    assert mae == pytest.approx(np.mean(np.abs(err)), rel=1e-12)
    raw_u, raw_i = int(compact_ds.users[0]), int(compact_ds.items[0])
    assert ma.predict(raw_u, raw_i).est == mb.predict(raw_u, raw_i).est
    assert ma.predict(10**9, raw_i).est == mb.predict(10**9, raw_i).est


def test_pickles_as_arrays(pair):
    surprise_ds, compact_ds = pair
    assert len(pickle.dumps(compact_ds)) < len(pickle.dumps(surprise_ds)) / 3
    trainset = compact_ds.build_full_trainset()
    model = fit_svd(trainset, PARAMS)
    with trainset.cached_ratings():
        restored = pickle.loads(pickle.dumps(model))
    assert restored.trainset._rating_lists is None  # the per-rating lists are never pickled
    u, i = int(compact_ds.users[5]), int(compact_ds.items[5])
    assert restored.predict(u, i).est == model.predict(u, i).est
