"""`ml.arrays`: the shared array helpers."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_assets.ml.arrays import unique


@pytest.mark.parametrize("seed", range(5))
def test_unique_is_numpys_unique(seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(-5, 50, int(rng.integers(0, 200)))
    assert np.array_equal(unique(values), np.unique(values))
    assert unique(values).dtype == values.dtype
    grid = values[: values.size // 2 * 2].reshape(-1, 2)  # flattened, as np.unique does
    assert np.array_equal(unique(grid), np.unique(grid))


def test_unique_of_nothing_and_of_one_value():
    assert unique(np.array([], dtype=np.int64)).size == 0
    assert unique(np.array([7, 7, 7])).tolist() == [7]
