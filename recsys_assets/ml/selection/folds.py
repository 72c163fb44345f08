"""Which ratings are in which CV fold: Surprise's KFold split (seeded shuffle, k near-equal
folds), with the search's validation ratings kept out of every test fold."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["fold_bounds", "fold_indices", "fold_split", "shared_inner_pairs", "train_indices"]


def fold_bounds(n_ratings: int, n_folds: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Shuffled rating indices and fold boundaries, exactly as `surprise...KFold(shuffle=True)`."""
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    if n_folds > n_ratings:
        raise ValueError(f"{n_ratings} ratings are too few for {n_folds}-fold cross-validation")
    indices = np.arange(n_ratings)
    np.random.RandomState(seed).shuffle(indices)
    bounds = [0]
    for fold in range(n_folds):
        bounds.append(bounds[-1] + n_ratings // n_folds + (1 if fold < n_ratings % n_folds else 0))
    return indices, bounds


def fold_split(
    n_ratings: int, n_folds: int, seed: int, holdout: np.ndarray | None = None
) -> tuple[np.ndarray, list[int]]:
    """`fold_bounds` over the ratings not in `holdout`; `holdout` follows as a last segment.

    The k test folds partition the other ratings exactly as KFold would partition them as a
    list of their own; the extra segment is never a test fold, so `train_indices` puts the
    holdout (the hyperparameter search's validation ratings) in every fold's training part.
    Without a holdout this is `fold_bounds`.
    """
    if holdout is None or len(holdout) == 0:
        return fold_bounds(n_ratings, n_folds, seed)
    rest = np.setdiff1d(np.arange(n_ratings), holdout, assume_unique=True)
    order, bounds = fold_bounds(rest.size, n_folds, seed)
    indices = np.concatenate([rest[order], np.asarray(holdout, dtype=rest.dtype)])
    return indices, [*bounds, indices.size]


def fold_indices(indices: np.ndarray, bounds: list[int], fold: int) -> np.ndarray:
    """Rating indices of `fold` (1-based): its test set."""
    return indices[bounds[fold - 1] : bounds[fold]]


def train_indices(indices: np.ndarray, bounds: list[int], excluded: Iterable[int]) -> np.ndarray:
    """Rating indices of every fold not in `excluded`, in KFold's trainset order."""
    skip = set(excluded)
    parts = [fold_indices(indices, bounds, f) for f in range(1, len(bounds)) if f not in skip]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=indices.dtype)


def shared_inner_pairs(n_folds: int) -> list[tuple[int, int]]:
    """Fold pairs (a, b) whose blend weights come from one inner model fitted without both.

    Validated on fold a, that model picks b's weights (b's training data holds every fold but
    b, so all the model and a); validated on b, it picks a's. One fit on (k-2)/k of the data
    replaces two on ~(k-1)/k * 3/4. It needs a third fold to train on; an odd last fold keeps
    its own inner split (`cross_validation._select_own`).
    """
    if n_folds < 3:
        return []
    return [(a, a + 1) for a in range(1, n_folds, 2)]
