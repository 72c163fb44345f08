"""Everything this project uses from inside Surprise beyond its public API, in one place.

Pinned to scikit-surprise 1.1.5 (pyproject.toml). These are private attributes and internal
modules of that version; at an upgrade, check them here first. The bit-identity tests of the
compiled fit (`recsys_assets_tests/ml/test_svd_sgd.py`) and of the array-backed trainset
(`test_datasets.py`) fail if any of them changed meaning.

* `Trainset._raw2inner_id_users` / `_raw2inner_id_items` (and the `_inner2raw_*` caches): the
  raw -> inner id maps. Read to pull factors out of a model; set by the array-backed trainset.
* `surprise.dataset.DatasetAutoFolds`: what `Dataset.load_from_df` returns; the array-backed
  dataset subclasses it, so it is a `surprise.Dataset` with Surprise's `build_full_trainset`.
* `AlgoBase.fit` and `surprise.utils.get_rng`: what `SVD.fit` runs before its SGD loop (the
  compiled fit repeats it so the model's state and its random initialisation are the same).
"""

from __future__ import annotations

import warnings

import surprise
from surprise import Trainset
from surprise.dataset import DatasetAutoFolds
from surprise.prediction_algorithms.algo_base import AlgoBase
from surprise.utils import get_rng

__all__ = [
    "SURPRISE_VERSION",
    "AlgoBase",
    "DatasetAutoFolds",
    "get_rng",
    "raw2inner_items",
    "raw2inner_users",
    "set_id_maps",
]

SURPRISE_VERSION = "1.1.5"

if getattr(surprise, "__version__", SURPRISE_VERSION) != SURPRISE_VERSION:  # pragma: no cover
    warnings.warn(
        f"recsys_assets relies on internals of scikit-surprise {SURPRISE_VERSION}, found "
        f"{surprise.__version__}: see recsys_assets/ml/surprise_internals.py",
        stacklevel=1,
    )


def raw2inner_users(trainset: Trainset) -> dict:
    """The trainset's raw -> inner user id map."""
    return trainset._raw2inner_id_users


def raw2inner_items(trainset: Trainset) -> dict:
    """The trainset's raw -> inner item id map."""
    return trainset._raw2inner_id_items


def set_id_maps(trainset: Trainset, users: dict, items: dict) -> None:
    """Give a trainset built without `Trainset.__init__` its id maps (the inverse maps are
    built lazily by `to_raw_uid`/`to_raw_iid`, from None)."""
    trainset._raw2inner_id_users = users
    trainset._raw2inner_id_items = items
    trainset._inner2raw_id_users = None
    trainset._inner2raw_id_items = None
