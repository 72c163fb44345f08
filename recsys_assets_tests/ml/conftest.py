"""A small random ratings table and its CompactDataset, shared by the fit and CV tests."""

import numpy as np
import pandas as pd
import pytest
from surprise import Reader

from recsys_assets.ml.datasets import CompactDataset


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    users, movies = rng.integers(1, 80, 3000), rng.integers(1, 120, 3000)
    df = pd.DataFrame({"user_id": users, "movie_id": movies, "rating": rng.integers(1, 6, 3000)})
    return df.drop_duplicates(["user_id", "movie_id"])


@pytest.fixture(scope="module")
def dataset(frame) -> CompactDataset:
    return CompactDataset.from_df(frame, Reader(rating_scale=(1, 5)))
