"""Fitting the SVD: training error, epoch progress, the engines."""

import logging

import pytest
from surprise import accuracy

from recsys_assets.ml.training import SVDParams, fit_svd, training_error

PARAMS = SVDParams(n_epochs=5, n_factors=8, random_state=3)


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


def test_surprise_engine_leaves_no_cached_ratings(dataset):
    trainset = dataset.build_full_trainset()
    fit_svd(trainset, SVDParams(n_epochs=2, n_factors=4, engine="surprise"))
    assert trainset._rating_lists is None  # nothing of the speed-up gets pickled
