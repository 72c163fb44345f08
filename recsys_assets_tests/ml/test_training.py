import logging

import numpy as np
import pandas as pd
import pytest
from surprise import Dataset, Reader, accuracy
from surprise.model_selection import KFold

from recsys_assets.ml.training import SVDParams, cross_validate_svd, fit_svd, training_error

PARAMS = SVDParams(n_epochs=5, n_factors=8, random_state=3)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    rng = np.random.default_rng(0)
    users, movies = rng.integers(1, 80, 3000), rng.integers(1, 120, 3000)
    df = pd.DataFrame({"user_id": users, "movie_id": movies, "rating": rng.integers(1, 6, 3000)})
    df = df.drop_duplicates(["user_id", "movie_id"])
    return Dataset.load_from_df(df, Reader(rating_scale=(1, 5)))


def test_cv_matches_surprise_on_the_same_folds(dataset):
    report = cross_validate_svd(dataset, PARAMS, n_folds=3, seed=7, n_jobs=1)
    expected = []
    for trainset, testset in KFold(n_splits=3, random_state=7, shuffle=True).split(dataset):
        preds = PARAMS.build().fit(trainset).test(testset)
        expected.append((accuracy.rmse(preds, verbose=False), accuracy.mae(preds, verbose=False)))
    assert list(report["fold"]) == [1, 2, 3]
    np.testing.assert_allclose(report[["rmse", "mae"]].to_numpy(), np.array(expected))
    assert (report["fit_time"] > 0).all() and (report["n_test"] > 0).all()
    assert report["n_train"].iloc[0] + report["n_test"].iloc[0] == len(dataset.raw_ratings)


def test_parallel_folds_give_the_same_numbers(dataset):
    seq = cross_validate_svd(dataset, PARAMS, n_folds=4, seed=1, n_jobs=1)
    par = cross_validate_svd(dataset, PARAMS, n_folds=4, seed=1, n_jobs=2)
    np.testing.assert_allclose(seq[["rmse", "mae"]], par[["rmse", "mae"]])


def test_cv_rejects_one_fold(dataset):
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_validate_svd(dataset, PARAMS, n_folds=1)


def test_training_error_equals_surprise_on_the_trainset(dataset):
    trainset = dataset.build_full_trainset()
    model = fit_svd(trainset, PARAMS)
    preds = model.test(trainset.build_testset())
    rmse, mae = training_error(model, trainset)
    assert rmse == pytest.approx(accuracy.rmse(preds, verbose=False), rel=1e-9)
    assert mae == pytest.approx(accuracy.mae(preds, verbose=False), rel=1e-9)


def test_fit_logs_each_epoch(dataset, caplog):
    log = logging.getLogger("test-fit")
    with caplog.at_level(logging.INFO, logger="test-fit"):
        fit_svd(dataset.build_full_trainset(), PARAMS, log=log, progress_interval=0)
    epochs = [r.getMessage() for r in caplog.records if "epoch" in r.getMessage()]
    assert len(epochs) == PARAMS.n_epochs
    assert epochs[0] == "svd fit: Processing epoch 0"


def test_fit_progress_is_throttled(dataset, caplog):
    log = logging.getLogger("test-fit-throttled")
    with caplog.at_level(logging.INFO, logger="test-fit-throttled"):
        fit_svd(dataset.build_full_trainset(), PARAMS, log=log, progress_interval=3600)
    assert [r.getMessage() for r in caplog.records] == ["svd fit: Processing epoch 0"]


def test_fast_fit_is_identical_to_surprise_and_leaves_no_trace(dataset):
    trainset = dataset.build_full_trainset()
    ours = fit_svd(trainset, PARAMS)
    reference = PARAMS.build().fit(dataset.build_full_trainset())
    np.testing.assert_array_equal(ours.pu, reference.pu)
    np.testing.assert_array_equal(ours.qi, reference.qi)
    np.testing.assert_array_equal(ours.bu, reference.bu)
    assert "all_ratings" not in vars(trainset)  # nothing of the speed-up gets pickled


def test_fold_bounds_match_surprise_kfold(dataset):
    from recsys_assets.ml.training import fold_bounds

    indices, bounds = fold_bounds(len(dataset.raw_ratings), 3, 7)
    for k, (_, testset) in enumerate(
        KFold(n_splits=3, random_state=7, shuffle=True).split(dataset)
    ):
        expected = [dataset.raw_ratings[i][:3] for i in indices[bounds[k] : bounds[k + 1]]]
        assert expected == testset
