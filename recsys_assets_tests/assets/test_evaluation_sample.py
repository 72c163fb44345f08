"""The evaluation budget in the graph: below the cap nothing changes; above it the search, the
CV and the list choice run on a sample of whole users while the shipped models fit every
rating, and every figure says what it was measured on."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from recsys_assets.assets.config import training_run_config
from recsys_assets.definitions import all_assets, all_checks
from recsys_assets_tests.assets.test_tuning import SEARCH, meta
from recsys_assets_tests.conftest import FAST_SVD, make_resources

# The demo data holds 5,000 ratings of 120 users: 2,500 samples about half of them.
CAP = 2500


def config(max_ratings=None):
    return training_run_config(
        n_folds=4, top_n=10, eval_max_ratings=max_ratings, **FAST_SVD, **SEARCH
    )


def materialize(home, db, run_config, promoted=True):
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [*all_assets, *all_checks],
            resources=make_resources(home, db),
            run_config=run_config,
            instance=instance,
            raise_on_error=promoted,
        )
    assert result.success or not promoted
    return result


def _figures(result):
    folds = result.output_for_node("cv_report").folds
    figures = [c for c in folds.columns if not c.endswith("_time")]
    search = result.output_for_node("svd_hyperparameters")
    return folds[figures], search.table.drop(columns="fit_seconds"), search.params


def test_below_the_cap_every_figure_is_the_uncapped_one_bit_for_bit(tmp_path, demo_db):
    """The default budget (1M ratings) and no budget at all (0) give the same folds, search
    table, choice and shipped list on data under the cap."""
    default = materialize(tmp_path / "default", demo_db, config())
    uncapped = materialize(tmp_path / "uncapped", demo_db, config(max_ratings=0))
    (folds, table, params), (folds_0, table_0, params_0) = _figures(default), _figures(uncapped)
    assert params == params_0
    np.testing.assert_array_equal(folds.to_numpy(), folds_0.to_numpy())
    assert table.equals(table_0)
    cv, cv_0 = default.output_for_node("cv_report"), uncapped.output_for_node("cv_report")
    assert cv.policy == cv_0.policy and cv.ease == cv_0.ease and cv.ease.validated_lam is None
    size = default.output_for_node("evaluation_sample").size
    assert not size.sampled and size.ratings == size.total_ratings == 5000
    assert meta(default, "cv_report")["evaluated_on"].startswith("every rating")


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    from recsys_assets.data.demo import generate_demo_ratings
    from recsys_assets.db import RatingsStore

    home = tmp_path_factory.mktemp("capped")
    db = RatingsStore(f"sqlite:///{home / 'ratings.db'}")
    db.ensure_schema()
    movies, ratings = generate_demo_ratings(n_users=120, n_movies=150, n_ratings=5000, seed=1)
    db.insert_movies(movies)
    db.insert_ratings(ratings)
    # Fitted on 60 users' ratings, the tiny test SVD may or may not beat BaselineOnly: the
    # gates' verdict is not what is tested here, every asset up to the candidate is.
    return materialize(home, db, config(max_ratings=CAP), promoted=False), ratings


def test_above_the_cap_choosing_and_checking_run_on_whole_sampled_users(capped):
    result, ratings = capped
    sample = result.output_for_node("evaluation_sample")
    size = sample.size
    assert size.sampled and 0 < size.ratings <= CAP and size.total_ratings == len(ratings)
    users = np.unique(sample.dataset.users)
    assert size.users == users.size < size.total_users
    # Whole users: each sampled user with every rating of theirs.
    counts = ratings.groupby("user_id").size()
    assert int(counts.loc[users].sum()) == size.ratings
    # The search validates on ratings of the sample, and fits on the rest of it.
    search = result.output_for_node("svd_hyperparameters")
    assert search.holdout.max() < size.ratings
    last = search.table[search.table["rung"] == search.table["rung"].max()]
    assert (last["n_train"] == size.ratings - search.holdout.size).all()
    # Every fold trains and tests within the sample.
    cv = result.output_for_node("cv_report")
    assert ((cv.folds["n_train"] + cv.folds["n_test"]) == size.ratings).all()
    assert cv.evaluated == size


def test_above_the_cap_the_shipped_models_fit_every_rating(capped):
    result, ratings = capped
    size = result.output_for_node("evaluation_sample").size
    assert meta(result, "svd_model")["ratings"] == len(ratings)
    assert meta(result, "svd_model")["users"] == size.total_users
    cv = result.output_for_node("cv_report")
    ease = result.output_for_node("ranking_model")
    if cv.ease is None:  # the blend ships: no EASE is fitted (test_cv_result checks λ's scale)
        assert cv.policy.ranker == "svd" and ease is None
        return
    # λ chosen on the sample, scaled to every user (XᵀX grows with the users).
    assert cv.ease.validated_lam is not None
    assert ease.lam == cv.ease.lam == pytest.approx(cv.ease.validated_lam / size.user_fraction)
    assert ease.n_users == size.total_users
    assert meta(result, "ranking_model")["lambda_validated"] == cv.ease.validated_lam


def test_above_the_cap_the_metadata_and_manifest_name_the_sample(capped):
    result, _ = capped
    size = result.output_for_node("evaluation_sample").size
    for asset in ("evaluation_sample", "svd_hyperparameters", "cv_report"):
        shown = meta(result, asset)
        assert shown["sample_users"] == size.users and shown["total_users"] == size.total_users
        assert shown["sample_ratings"] == size.ratings
        assert shown["total_ratings"] == size.total_ratings
        assert shown["sample_max_ratings"] == CAP
        assert f"a sample of {size.users:,} of {size.total_users:,} users" in shown["evaluated_on"]
    manifest = result.output_for_node("model_artifact")
    assert manifest["evaluation"] == size.as_dict() and manifest["evaluation"]["sampled"]
