"""The hyperparameter search: validation split, candidates, successive halving, honesty."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from surprise import Dataset, Reader
from surprise.model_selection import KFold

from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.ml.datasets import CompactDataset
from recsys_assets.ml.factors import SVDFactors, score_pairs
from recsys_assets.ml.selection.cross_validation import CVSettings, cross_validate_svd
from recsys_assets.ml.selection.folds import fold_bounds, fold_indices, fold_split, train_indices
from recsys_assets.ml.selection.search import (
    CHAMPION,
    SEED,
    Candidate,
    SearchPlan,
    evaluate_rung,
    plan_fractions,
    sample_candidates,
    user_sample,
    validation_split,
)
from recsys_assets.ml.selection.search_result import choose
from recsys_assets.ml.training import SVDParams, fit_svd

SEED_PARAMS = SVDParams(n_epochs=20, n_factors=5, lr_all=0.02, reg_all=0.1)
GRID = {"n_factors": [2, 5, 10], "n_epochs": [10, 20], "lr_all": [0.01, 0.02], "reg_all": [0.1]}


@pytest.fixture(scope="module")
def dataset() -> CompactDataset:
    _, ratings = generate_demo_ratings(n_users=150, n_movies=120, n_ratings=9000, seed=3)
    frame = ratings[["user_id", "movie_id", "rating"]]
    return CompactDataset.from_df(frame, Reader(rating_scale=(1.0, 5.0)))


def _plan(dataset, candidates, fractions=(1.0, 1.0, 1.0), eta=2, max_seconds=0.0):
    users = dataset.rating_arrays().users
    return SearchPlan(
        candidates=tuple(candidates),
        holdout=validation_split(users, 0.1, 10, 42),
        fractions=fractions,
        eta=eta,
        seed=42,
        max_seconds=max_seconds,
        started=time.time(),
    )


def _search(dataset, plan):
    rows: list[dict] = []
    for rung in range(plan.n_rungs):
        candidates = plan.survivors(rung, rows)
        rows += evaluate_rung(
            dataset, plan, rung, candidates, n_jobs=1, reuse=plan.reusable(rung, candidates, rows)
        )
    return choose(plan, rows)


def test_validation_split_takes_a_fraction_of_each_user_with_enough_ratings():
    users = np.repeat(np.arange(5), [30, 10, 9, 2, 1])
    held = validation_split(users, 0.2, 10, seed=1)
    assert np.array_equal(held, np.unique(held))
    assert np.bincount(users[held], minlength=5).tolist() == [6, 2, 0, 0, 0]
    assert np.array_equal(held, validation_split(users, 0.2, 10, seed=1))  # seeded
    assert not np.array_equal(held, validation_split(users, 0.2, 10, seed=2))
    with pytest.raises(ValueError, match="validation_fraction"):
        validation_split(users, 1.0, 10, seed=1)


def test_fold_split_keeps_the_holdout_out_of_every_test_fold_and_in_every_training_part():
    n, holdout = 103, np.array([0, 5, 17, 40, 99])
    indices, bounds = fold_split(n, 4, 7, holdout)
    tests = [fold_indices(indices, bounds, f) for f in range(1, 5)]
    rest = np.setdiff1d(np.arange(n), holdout)
    # The test folds partition exactly the ratings outside the holdout...
    assert np.array_equal(np.sort(np.concatenate(tests)), rest)
    for fold in range(1, 5):
        train = train_indices(indices, bounds, [fold])
        # ...and every fold trains on everything else, the holdout included.
        assert set(holdout) <= set(train)
        assert np.array_equal(np.sort(np.concatenate([train, tests[fold - 1]])), np.arange(n))
    # As KFold over the remaining ratings as a list of their own.
    order, rest_bounds = fold_bounds(rest.size, 4, 7)
    assert np.array_equal(indices[: rest.size], rest[order]) and bounds[:-1] == rest_bounds
    # No holdout: exactly today's folds.
    today = fold_bounds(n, 4, 7)
    for split in (fold_split(n, 4, 7), fold_split(n, 4, 7, np.zeros(0, dtype=np.int64))):
        assert np.array_equal(split[0], today[0]) and split[1] == today[1]


@pytest.mark.parametrize("n_folds", [3, 4])
def test_cross_validation_never_tests_the_holdout(n_folds):
    """Fold membership derived without `fold_split`: Surprise's own KFold over the ratings
    outside V, as a list of their own, with V in every training part. An SVD without factors
    or epochs predicts its training mean, so each fold's RMSE, MAE and sizes are a function
    of which ratings it tested; V's ratings (all 5, the others 1-3) would show."""
    rng = np.random.default_rng(11)
    n = 600
    frame = pd.DataFrame(
        {
            "user": rng.integers(1, 40, n),
            "item": rng.integers(1, 50, n),
            "rating": rng.integers(1, 4, n).astype(float),
        }
    )
    holdout = np.sort(rng.choice(n, 70, replace=False))
    frame.loc[holdout, "rating"] = 5.0
    dataset = CompactDataset.from_df(frame, Reader(rating_scale=(1, 5)))
    mean_only = SVDParams(n_epochs=0, n_factors=0)
    settings = CVSettings(n_folds, 42, n_jobs=1, min_user_ratings=None, ease=None)
    got = cross_validate_svd(dataset, mean_only, settings, holdout=holdout)

    rest = frame.drop(index=holdout)
    kfold = KFold(n_splits=n_folds, random_state=42, shuffle=True)
    folds = kfold.split(Dataset.load_from_df(rest, Reader(rating_scale=(1, 5))))
    total = frame["rating"].sum()
    assert got["fold"].tolist() == list(range(1, n_folds + 1))
    for row, (_, testset) in zip(got.itertuples(), folds, strict=True):
        tested = np.array([r for _, _, r in testset])
        mean = (total - tested.sum()) / (n - tested.size)  # the training mean, V included
        assert row.n_test == tested.size and row.n_train == n - tested.size
        assert row.rmse == pytest.approx(np.sqrt(np.mean((mean - tested) ** 2)), abs=1e-12)
        assert row.mae == pytest.approx(np.mean(np.abs(mean - tested)), abs=1e-12)
    assert got["n_test"].sum() == n - holdout.size


def test_candidates_seed_first_then_champion_then_distinct_grid_points():
    champion = SVDParams(n_epochs=10, n_factors=2, lr_all=0.01, reg_all=0.1)
    out = sample_candidates(SEED_PARAMS, GRID, n_iter=5, random_state=0, champion=champion)
    assert [c.label for c in out] == [SEED, CHAMPION, "c1", "c2", "c3", "c4", "c5"]
    assert out[0].params == SEED_PARAMS and out[1].params == champion
    params = [c.params for c in out]
    assert len(set(params)) == len(params)  # the seed's point of the grid is not drawn again
    assert sample_candidates(SEED_PARAMS, GRID, 5, 0, champion) == out  # seeded
    # A champion with the seed's configuration is the seed's candidate; n_iter caps at the grid.
    everything = sample_candidates(
        SEED_PARAMS, GRID, n_iter=100, random_state=0, champion=SEED_PARAMS
    )
    assert [c.label for c in everything].count(CHAMPION) == 0
    assert len(everything) == 12  # 3 * 2 * 2 grid points, the seed's among them
    with pytest.raises(ValueError, match="not searchable"):
        sample_candidates(SEED_PARAMS, {"biased": [True]}, 1, 0)


def test_plan_fractions_end_at_full_size_and_respect_the_floor():
    assert plan_fractions(1_000_000, 4, 3, 20_000) == (1 / 16, 1 / 4, 1.0)
    # 25% would be less than twice 20%: the same sample again (rows reused, not refitted).
    assert plan_fractions(100_000, 4, 3, 20_000) == (0.2, 0.2, 1.0)
    assert plan_fractions(5_000, 4, 3, 20_000) == (1.0, 1.0, 1.0)
    users = np.repeat(np.arange(100), 3)
    small, large = user_sample(users, 0.1, 1), user_sample(users, 0.5, 1)
    assert np.unique(users[small]).size == 10 and not (small & ~large).any()  # nested


def test_successive_halving_respects_the_budget_and_always_runs_the_seed_at_full_size(dataset):
    candidates = sample_candidates(SEED_PARAMS, GRID, n_iter=8, random_state=0)
    plan = _plan(dataset, candidates, fractions=(0.25, 0.5, 1.0), eta=2)
    result = _search(dataset, plan)
    table = result.table
    per_rung = table.groupby("rung")["label"].apply(list).to_dict()
    # 8 sampled + the seed, then the best 4 sampled, then the best 2 sampled + the seed.
    assert len(per_rung[0]) == 9 and SEED in per_rung[0]
    assert len(per_rung[1]) == 4 and SEED not in per_rung[1]
    assert len(per_rung[2]) == 3 and SEED in per_rung[2]
    best_of_0 = table[(table["rung"] == 0) & (table["label"] != SEED)].nsmallest(4, "rmse")
    assert set(per_rung[1]) == set(best_of_0["label"])
    assert set(table.loc[table["rung"] == 2, "fraction"]) == {1.0}
    full = table[table["rung"] == 2]
    assert result.record["chosen_validation_rmse"] == full["rmse"].min()
    assert result.record["seed_validation_rmse"] == float(
        full.loc[full["label"] == SEED, "rmse"].iloc[0]
    )
    assert result.record["configurations_evaluated"] <= 1 + 8
    assert result.params == next(
        c.params for c in candidates if c.label == result.record["chosen_label"]
    )


def test_seconds_budget_spent_leaves_only_seed_and_champion(dataset):
    champion = SVDParams(n_epochs=10, n_factors=2, lr_all=0.01, reg_all=0.1)
    candidates = sample_candidates(SEED_PARAMS, GRID, n_iter=6, random_state=0, champion=champion)
    plan = _plan(dataset, candidates, fractions=(0.5, 0.5, 1.0), max_seconds=1e-9)
    result = _search(dataset, plan)
    evaluated = result.table[~result.table["skipped"]]
    assert set(evaluated["label"]) == {SEED, CHAMPION}
    assert set(evaluated.loc[evaluated["rung"] == 2, "label"]) == {SEED, CHAMPION}
    assert result.record["champion_validation_rmse"] is not None


def test_rows_on_an_identical_sample_are_reused_not_refitted(dataset):
    candidates = sample_candidates(SEED_PARAMS, GRID, n_iter=3, random_state=0)
    result = _search(dataset, _plan(dataset, candidates))  # every rung at full size
    table = result.table
    assert not table.loc[table["rung"] == 0, "reused"].any()
    assert table.loc[table["rung"] > 0, "reused"].all()
    assert result.record["fits"] == 4


def test_a_configuration_best_on_the_reported_test_folds_only_does_not_win(dataset):
    # Planted: no regularisation, many factors and epochs. It nearly memorises its training
    # ratings, and the search's models train on every rating outside V, the CV test folds'
    # included: scored on those folds it is by far the best. On V it is the worst.
    planted = SVDParams(n_epochs=150, n_factors=40, lr_all=0.02, reg_all=0.0)
    candidates = [
        *sample_candidates(SEED_PARAMS, GRID, n_iter=2, random_state=0),
        Candidate("planted", planted),
    ]
    plan = _plan(dataset, candidates, fractions=(1.0,))  # one rung: everyone at full size
    result = _search(dataset, plan)
    assert result.record["chosen_label"] != "planted"

    everything = dataset.rating_arrays()
    indices, bounds = fold_split(everything.ratings.size, 4, 42, plan.holdout)
    reported = everything.take(
        np.concatenate([fold_indices(indices, bounds, f) for f in range(1, 5)])
    )
    train = dataset.trainset_of(np.setdiff1d(np.arange(everything.ratings.size), plan.holdout))
    on_test_folds = {}
    for candidate in candidates:
        factors = SVDFactors.from_svd(fit_svd(train, candidate.params))
        err = score_pairs(factors, reported.users, reported.movies) - reported.ratings
        on_test_folds[candidate.label] = float(np.sqrt(np.mean(err**2)))
    assert min(on_test_folds, key=on_test_folds.get) == "planted"
    on_validation = result.table.set_index("label")["rmse"]
    assert on_validation["planted"] == on_validation.max()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_each_candidate_is_logged_as_its_result_arrives(dataset, monkeypatch, n_jobs):
    """Progress of a long rung: a line per candidate as it finishes, not all at the end."""
    import logging

    from recsys_assets.ml.selection import search

    events: list[str] = []
    real_fit = search.fit_svd

    def spy_fit(trainset, params, *args, **kwargs):
        events.append("fit")  # forked fits append in the child: invisible here
        return real_fit(trainset, params, *args, **kwargs)

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.append(record.getMessage())

    log = logging.getLogger(f"test-search-progress-{n_jobs}")
    log.addHandler(Recorder())
    log.setLevel(logging.INFO)
    monkeypatch.setattr(search, "fit_svd", spy_fit)
    candidates = sample_candidates(SEED_PARAMS, GRID, n_iter=2, random_state=0)
    plan = _plan(dataset, candidates, fractions=(1.0,))
    rows = evaluate_rung(dataset, plan, 0, plan.candidates, n_jobs=n_jobs, log=log)
    lines = [e for e in events if e != "fit"]
    assert len(lines) == len(rows) == 3 and all("validation RMSE" in line for line in lines)
    if n_jobs == 1:
        assert [e if e == "fit" else "line" for e in events] == ["fit", "line"] * 3
