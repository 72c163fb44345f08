"""Cross-validation: Surprise's folds, fold subsets, and choices made without the test fold."""

import numpy as np
import pandas as pd
import pytest
from surprise import Dataset, Reader, accuracy
from surprise.model_selection import KFold

from recsys_assets.ml.datasets import CompactDataset
from recsys_assets.ml.ranking import RankingPolicy
from recsys_assets.ml.selection.cross_validation import CVSettings, cross_validate_svd
from recsys_assets.ml.training import SVDParams

PARAMS = SVDParams(n_epochs=5, n_factors=8, random_state=3)


@pytest.fixture(scope="module")
def reference(frame) -> Dataset:
    """Surprise's own dataset of the same ratings: the reference the project's is checked by."""
    return Dataset.load_from_df(frame, Reader(rating_scale=(1, 5)))


def _pairs(dataset: CompactDataset) -> list[tuple]:
    """(user, movie) of each rating, in the dataset's order."""
    return list(zip(dataset.users.tolist(), dataset.items.tolist(), strict=True))


def test_cv_matches_surprise_on_the_same_folds(dataset, reference):
    report = cross_validate_svd(dataset, PARAMS, CVSettings(3, 7, n_jobs=1))
    expected = []
    for trainset, testset in KFold(n_splits=3, random_state=7, shuffle=True).split(reference):
        preds = PARAMS.build().fit(trainset).test(testset)
        expected.append((accuracy.rmse(preds, verbose=False), accuracy.mae(preds, verbose=False)))
    assert list(report["fold"]) == [1, 2, 3]
    np.testing.assert_allclose(report[["rmse", "mae"]].to_numpy(), np.array(expected))
    assert (report["fit_time"] > 0).all() and (report["n_test"] > 0).all()
    assert report["n_train"].iloc[0] + report["n_test"].iloc[0] == len(dataset)


def test_parallel_folds_give_the_same_numbers(dataset):
    seq = cross_validate_svd(dataset, PARAMS, CVSettings(4, 1, n_jobs=1))
    par = cross_validate_svd(dataset, PARAMS, CVSettings(4, 1, n_jobs=2))
    same = ["rmse", "mae", "baseline_rmse", "blend_ndcg", "svd_ndcg", "taste_weight"]
    np.testing.assert_allclose(seq[same], par[same])
    assert list(seq.columns) == list(par.columns)


@pytest.mark.parametrize("n_folds", [4, 5])
def test_fold_subsets_give_the_full_runs_rows(dataset, n_folds):
    # The Dagster fan-out runs each fold in its own step: every figure of a fold's row
    # (baselines, ranking metrics, blend weights from the shared inner model) must be the
    # full run's, also for a fold whose pair partner runs elsewhere and for an odd last fold.
    full = cross_validate_svd(dataset, PARAMS, CVSettings(n_folds, 2, n_jobs=1))
    parts = [
        cross_validate_svd(dataset, PARAMS, CVSettings(n_folds, 2, n_jobs=1), folds=[f])
        for f in range(1, n_folds + 1)
    ]
    split = pd.concat(parts, ignore_index=True)
    figures = [c for c in full.columns if not c.endswith("_time")]
    pd.testing.assert_frame_equal(split[figures], full[figures])
    pair = cross_validate_svd(dataset, PARAMS, CVSettings(n_folds, 2, n_jobs=2), folds=[3, 4])
    pd.testing.assert_frame_equal(pair[figures], full[figures].iloc[2:4].reset_index(drop=True))


def test_cv_rejects_bad_fold_subsets(dataset):
    with pytest.raises(ValueError, match="non-empty subset"):
        cross_validate_svd(dataset, PARAMS, CVSettings(n_folds=3), folds=[4])


def test_cv_rejects_one_fold(dataset):
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_validate_svd(dataset, PARAMS, CVSettings(n_folds=1))


def test_fold_bounds_match_surprise_kfold(reference):
    from recsys_assets.ml.selection.folds import fold_bounds

    indices, bounds = fold_bounds(len(reference.raw_ratings), 3, 7)
    for k, (_, testset) in enumerate(
        KFold(n_splits=3, random_state=7, shuffle=True).split(reference)
    ):
        expected = [reference.raw_ratings[i][:3] for i in indices[bounds[k] : bounds[k + 1]]]
        assert expected == testset


@pytest.mark.parametrize(
    ("n_folds", "pairs"),
    [(2, []), (3, [(1, 2)]), (4, [(1, 2), (3, 4)]), (5, [(1, 2), (3, 4)])],
)
def test_shared_inner_pairs(n_folds, pairs):
    from recsys_assets.ml.selection.folds import shared_inner_pairs

    assert shared_inner_pairs(n_folds) == pairs


@pytest.mark.parametrize("n_folds", [3, 4, 5])
def test_shared_inner_models_never_train_on_the_folds_they_serve(n_folds):
    from recsys_assets.ml.selection.folds import (
        fold_bounds,
        fold_indices,
        shared_inner_pairs,
        train_indices,
    )

    indices, bounds = fold_bounds(1003, n_folds, 5)
    for a, b in shared_inner_pairs(n_folds):
        inner = set(train_indices(indices, bounds, [a, b]).tolist())
        for validated, served in ((a, b), (b, a)):
            val = set(fold_indices(indices, bounds, validated).tolist())
            test = set(fold_indices(indices, bounds, served).tolist())
            served_train = set(train_indices(indices, bounds, [served]).tolist())
            assert not inner & test and not val & test  # the served fold is never seen
            assert not inner & val  # validation is held out from the inner model
            assert inner | val <= served_train  # only the served fold's training data
            assert len(inner) + len(val) + len(test) == 1003


def test_weight_selection_only_sees_training_data(dataset, monkeypatch):
    """The weights a fold is evaluated with were chosen without any of its test ratings."""
    from recsys_assets.ml.selection import cross_validation, evaluation, folds

    fits, grids = [], []
    real_fit = cross_validation.fit_svd

    def pairs(users, movies) -> set:
        return set(zip(np.asarray(users).tolist(), np.asarray(movies).tolist(), strict=True))

    def spy_fit(trainset, params, *args, **kwargs):
        to_raw = trainset.to_raw_uid, trainset.to_raw_iid
        fits.append({(to_raw[0](u), to_raw[1](i)) for u, i, _ in trainset.all_ratings()})
        return real_fit(trainset, params, *args, **kwargs)

    def tagging_grid(factors, train, validation, base, *args, **kwargs):
        # Tag each choice with its call number, to trace which call served which fold.
        grids.append((pairs(train.users, train.movies), pairs(validation.users, validation.movies)))
        tried = [{"taste_weight": float(len(grids)), "rating_weight": 0.0, "ndcg": 0.0}]
        return RankingPolicy(1.0, float(len(grids)), 0.0, base.min_user_ratings), tried

    def tagging_grids(factors, train, validations, base, *args, **kwargs):
        return [tagging_grid(factors, train, v, base) for v in validations]

    monkeypatch.setattr(cross_validation, "fit_svd", spy_fit)
    monkeypatch.setattr(evaluation, "grid_ndcgs", tagging_grids)
    n_folds, seed = 5, 2
    report = cross_validate_svd(dataset, PARAMS, CVSettings(n_folds, seed, n_jobs=1))
    indices, bounds = folds.fold_bounds(len(dataset), n_folds, seed)
    raw = _pairs(dataset)
    assert len(fits) == n_folds + 3  # + 2 shared inner fits (folds 1-2, 3-4) + fold 5's own
    assert len(grids) == 5 and sorted(report["taste_weight"]) == [1.0, 2.0, 3.0, 4.0, 5.0]
    for fold, call in zip(report["fold"], report["taste_weight"], strict=True):
        test = {raw[i][:2] for i in folds.fold_indices(indices, bounds, fold)}
        inner, validation = grids[int(call) - 1]
        assert not (inner | validation) & test
        assert not inner & validation and inner in fits  # the inner model saw only `inner`
    # Folds 1-2 and 3-4 share an inner model each: three distinct inner training sets.
    assert len({frozenset(inner) for inner, _ in grids}) == 3


def test_ease_lambda_and_shipped_list_are_chosen_without_the_test_fold(dataset, monkeypatch):
    """Each fold's λ (and so its shipped list) comes from EASE models and validation ratings
    that exclude its test fold; its evaluated EASE model is fitted on its training folds."""
    from recsys_assets.ml import ease
    from recsys_assets.ml.selection import evaluation, folds, list_choice
    from recsys_assets.ml.selection.list_choice import EaseSettings

    lambdas = (1.0, 2.0, 3.0, 4.0, 5.0)
    validations, fold_fits = [], []
    real_map_path, real_fit, real_evals = (
        list_choice.map_ease_path,
        list_choice.fit_ease,  # the fold's fit, through `EaseSettings.fit`
        evaluation.ranking_evals,
    )
    # Every λ solved and scored in this process, where the spies record what they saw.
    monkeypatch.setattr(ease, "cpu_count", lambda: 1)

    def pairs(users, movies) -> frozenset:
        return frozenset(zip(np.asarray(users).tolist(), np.asarray(movies).tolist(), strict=True))

    def spy_path(users, movies, lams, *args, **kwargs):
        spy_path.inner = pairs(users, movies)
        try:
            return real_map_path(users, movies, lams, *args, **kwargs)
        finally:
            spy_path.inner = None

    spy_path.inner = None

    def tagging_evals(factors, train, tests, policies, *args, ease_models=(), **kwargs):
        results = real_evals(
            factors, train, tests, policies, *args, ease_models=ease_models, **kwargs
        )
        if spy_path.inner is None:  # not the λ grid (a fold's own evaluation)
            return results
        # Validation set number v makes λ number v the best: λ traces the set a fold used.
        for t, test in enumerate(tests):
            seen = (spy_path.inner, pairs(test.users, test.movies))
            if seen not in validations:
                validations.append(seen)
            best = lambdas[validations.index(seen)]
            for e, model in enumerate(ease_models):
                results[t][len(policies) + e]["ndcg"] = 1.0 if model.lam == best else 0.0
        return results

    def spy_fit(users, movies, lam, *args, **kwargs):
        fold_fits.append((lam, pairs(users, movies)))
        return real_fit(users, movies, lam, *args, **kwargs)

    monkeypatch.setattr(list_choice, "map_ease_path", spy_path)
    monkeypatch.setattr(evaluation, "ranking_evals", tagging_evals)
    monkeypatch.setattr(list_choice, "fit_ease", spy_fit)
    n_folds, seed = 5, 2
    report = cross_validate_svd(
        dataset, PARAMS, CVSettings(n_folds, seed, n_jobs=1, ease=EaseSettings(lambdas))
    )
    indices, bounds = folds.fold_bounds(len(dataset), n_folds, seed)
    raw = _pairs(dataset)
    assert sorted(report["ease_lambda"]) == list(lambdas)  # one validation set per fold
    assert (report["shipped_ease"] == 1.0).all()  # EASE "won" every validation (planted)
    for fold, lam in zip(report["fold"], report["ease_lambda"], strict=True):
        test = {raw[i][:2] for i in folds.fold_indices(indices, bounds, fold)}
        train = {raw[i][:2] for i in folds.train_indices(indices, bounds, [fold])}
        inner, validation = validations[int(lam) - 1]
        assert not (inner | validation) & test and not inner & validation
        assert (lam, train) in fold_fits  # the evaluated model: the fold's training ratings
    np.testing.assert_allclose(report["shipped_ndcg"], report["ease_ndcg"])


@pytest.mark.parametrize("ease_ships", [True, False])
def test_with_one_choice_for_every_fold_ease_is_fitted_only_when_it_ships(
    dataset, monkeypatch, ease_ships
):
    """The choice made on V ships the blend: the folds fit no EASE (its solve is a fold's
    largest cost at 10,000 movies) and measure the blend that ships; V's EASE figures stay."""
    from recsys_assets.ml.selection import list_choice
    from recsys_assets.ml.selection.list_choice import EaseSettings, ListChoice

    fits = []
    real_fit = list_choice.fit_ease

    def spy_fit(*args, **kwargs):
        fits.append(args[2])
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(list_choice, "fit_ease", spy_fit)
    blend = RankingPolicy(taste_weight=0.5, rating_weight=0.1)
    choice = ListChoice(blend, 0.30, 250.0, 0.35 if ease_ships else 0.25)
    settings = CVSettings(4, 1, n_jobs=1, ease=EaseSettings(lambdas=(250.0,), max_items=100))
    report = cross_validate_svd(dataset, PARAMS, settings, choice=choice)
    assert (report["ease_lambda"] == 250.0).all()
    assert (report["ease_validation_ndcg"] == choice.ease_ndcg).all()
    if ease_ships:
        assert fits == [250.0] * 4 and "ease_ndcg" in report
        np.testing.assert_array_equal(report["shipped_ndcg"], report["ease_ndcg"])
    else:
        assert fits == [] and "ease_ndcg" not in report
        np.testing.assert_array_equal(report["shipped_ndcg"], report["blend_ndcg"])
        assert (report["shipped_ease"] == 0.0).all()
