"""The evaluation budget's sample: whole users, seeded, at most the cap; the dataset itself
below it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from surprise import Reader

from recsys_assets.ml.datasets import CompactDataset
from recsys_assets.ml.selection.sample import SampleSize, evaluation_sample, sample_users


@pytest.fixture
def dataset() -> CompactDataset:
    rng = np.random.default_rng(3)
    users = rng.integers(1, 301, size=6000)
    frame = pd.DataFrame(
        {
            "user_id": users,
            "movie_id": rng.integers(1, 400, size=users.size),
            "rating": rng.integers(1, 6, size=users.size).astype(np.float32),
        }
    )
    return CompactDataset.from_df(frame, Reader(rating_scale=(1, 5)))


@pytest.mark.parametrize("cap", [0, 6000, 10**9])
def test_below_the_cap_the_sample_is_the_dataset(dataset, cap):
    sample = evaluation_sample(dataset, cap, seed=7)
    assert sample.dataset is dataset
    size = sample.size
    assert not size.sampled and size.user_fraction == 1.0 and size.scope() == ("all",)
    assert size.ratings == size.total_ratings == 6000
    assert size.users == size.total_users == np.unique(dataset.users).size


def test_above_the_cap_whole_users_at_most_the_cap_in_dataset_order(dataset):
    sample = evaluation_sample(dataset, 2000, seed=7)
    kept = sample.dataset
    assert 0 < len(kept) <= 2000
    chosen = np.unique(kept.users)
    # Whole users: every rating of a chosen user, none of the others, in the dataset's order.
    mask = np.isin(dataset.users, chosen)
    assert np.array_equal(kept.users, dataset.users[mask])
    assert np.array_equal(kept.items, dataset.items[mask])
    assert np.array_equal(kept.ratings, dataset.ratings[mask])
    assert kept.reader is dataset.reader
    # The cap is filled as far as whole users allow: the next user in the seeded order would
    # not have fitted, so at most one user's ratings are left unused.
    assert 2000 - len(kept) < np.bincount(dataset.users).max()
    size = sample.size
    assert size.sampled and size.ratings == len(kept) and size.users == chosen.size
    assert size.total_ratings == 6000 and size.user_fraction == chosen.size / size.total_users
    assert size.scope() == ("sample", 2000, 7)


def test_the_sample_is_seeded(dataset):
    one, again = (sample_users(dataset.users, 2000, seed=7) for _ in range(2))
    other = sample_users(dataset.users, 2000, seed=8)
    assert np.array_equal(one, again)
    assert not np.array_equal(one, other)


def test_one_user_over_the_cap_is_still_a_sample():
    users = np.array([5, 5, 5, 5, 9, 9, 9, 9])
    mask = sample_users(users, 3, seed=0)
    assert mask.sum() == 4 and np.unique(users[mask]).size == 1


def test_the_record_round_trips_and_says_what_was_evaluated(dataset):
    size = evaluation_sample(dataset, 2000, seed=7).size
    record = size.as_dict()
    assert record["sampled"] is True
    assert SampleSize.of_record(record) == size
    assert SampleSize.of_record(None) is None
    text = size.describe()
    assert f"{size.users:,} of {size.total_users:,} users" in text and "cap 2,000" in text
