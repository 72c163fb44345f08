"""`svd_hyperparameters` in the graph: the search, fixed mode, the champion on today's data,
and the most-popular shelf while no model is champion."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from recsys_assets.assets.config import CVConfig, training_run_config
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.ranking import RankingPolicy
from recsys_assets.ml.selection.cross_validation import CVSettings, cross_validate_svd
from recsys_assets.ml.selection.folds import fold_indices, fold_split
from recsys_assets.ml.selection.list_choice import choose_on_holdout
from recsys_assets.ml.training import SVDParams, fit_svd
from recsys_assets_tests.conftest import FAST_CONFIG, FAST_SVD

# A small search around FAST_SVD: 7 grid points besides the seed's, 3 of them sampled.
GRID = {"n_factors": [2.0, 5.0], "n_epochs": [10.0, 30.0], "lr_all": [0.02], "reg_all": [0.05, 0.1]}
SEARCH = {"param_grid": GRID, "n_iter": 3, "min_rung_ratings": 100, "eta": 2}
BAD_SVD = {**FAST_SVD, "n_epochs": 1, "lr_all": 0.001}


def search_config(**overrides):
    return training_run_config(n_folds=4, top_n=10, **FAST_SVD, **{**SEARCH, **overrides})


def fixed_config(svd=FAST_SVD):
    return training_run_config(n_folds=4, top_n=10, tuning="fixed", **svd)


def meta(result, asset):
    events = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in events[-1].metadata.items()} if events else {}


def checks_of(result):
    return {
        e.event_specific_data.check_name: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def steps(result):
    return {e.step_key for e in result.all_events if e.is_step_success}


@pytest.fixture
def search_run(run):
    result = run(search_config())
    assert result.success
    return result


def test_search_chooses_on_validation_ratings_cv_and_fit_use_the_choice(search_run):
    chosen = search_run.output_for_node("svd_hyperparameters")
    dataset = search_run.output_for_node("surprise_dataset")
    assert chosen.mode == "search" and chosen.holdout.size > 0
    # Successive halving: 3 sampled + the seed, then the best 2, then the best + the seed.
    per_rung = chosen.table.groupby("rung")["label"].apply(list).to_dict()
    assert sorted(per_rung[0]) == ["c1", "c2", "c3", "seed"]
    assert len(per_rung[1]) == 2 and "seed" not in per_rung[1]
    assert len(per_rung[2]) == 2 and "seed" in per_rung[2]
    assert set(chosen.table.loc[chosen.table["rung"] == 2, "fraction"]) == {1.0}

    # cv_report: the chosen configuration, V in every fold's training part and never tested.
    n = len(dataset)
    indices, bounds = fold_split(n, 4, 42, chosen.holdout)
    tested = np.concatenate([fold_indices(indices, bounds, f) for f in range(1, 5)])
    assert not set(tested) & set(chosen.holdout) and tested.size == n - chosen.holdout.size
    report = search_run.output_for_node("cv_report")
    assert report.params == chosen.params
    expected = cross_validate_svd(dataset, chosen.params, holdout=chosen.holdout)
    assert report.folds["rmse"].mean() == pytest.approx(expected["rmse"].mean())

    # The lists (blend weights, EASE's λ, which one ships): chosen once on V, with the
    # search's own fit of the chosen configuration on every rating but V, for every fold.
    everything = dataset.rating_arrays()
    outside_v = np.setdiff1d(np.arange(n), chosen.holdout)
    refit = SVDFactors.from_svd(fit_svd(dataset.trainset_of(outside_v), chosen.params))
    for name in ("pu", "qi", "bu", "bi"):
        assert np.array_equal(getattr(chosen.factors, name), getattr(refit, name))
    cv = CVConfig()
    choice = choose_on_holdout(
        everything,
        chosen.holdout,
        refit,
        RankingPolicy(min_user_ratings=cv.min_user_ratings),
        cv.ease_settings(),
        max_users=cv.ranking_users,
        seed=42,
    )
    folds = report.folds
    assert (folds["ease_lambda"] == choice.ease_lambda).all()
    assert (folds["taste_weight"] == choice.policy.taste_weight).all()
    assert (folds["blend_validation_ndcg"] == choice.blend_ndcg).all()
    assert (folds["ease_validation_ndcg"] == choice.ease_ndcg).all()
    assert report.policy.ranker == choice.ranker

    # svd_model: the chosen configuration on every rating (V included).
    model = search_run.output_for_node("svd_model")
    assert model.trainset.n_ratings == n
    assert (model.n_factors, model.n_epochs, model.lr_bu, model.reg_bu) == (
        chosen.params.n_factors,
        chosen.params.n_epochs,
        chosen.params.lr_all,
        chosen.params.reg_all,
    )

    # The manifest records the search.
    manifest = search_run.output_for_node("model_artifact")
    search = manifest["hyperparameter_search"]
    assert manifest["hyperparameters"] == chosen.params.as_dict()
    assert search["mode"] == "search" and search["space"]["param_grid"]["n_factors"] == [2, 5]
    assert search["budget"]["n_iter"] == 3 and search["budget"]["rung_fractions"][-1] == 1.0
    assert search["chosen_validation_rmse"] <= search["seed_validation_rmse"]
    assert search["seed"] == {"n_factors": 5, "n_epochs": 30, "lr_all": 0.02, "reg_all": 0.1}
    assert search["validation_ratings"] == chosen.holdout.size

    # The UI: the table as markdown, the chosen values and RMSEs as floats.
    m = meta(search_run, "svd_hyperparameters")
    assert m["search"].startswith("| rung | label | n_factors |")
    assert m["search"].count("\n") == 1 + len(chosen.table)
    for key in ("n_factors", "n_epochs", "lr_all", "reg_all", "validation_rmse"):
        assert isinstance(m[key], float)
    assert m["seed_validation_rmse"] == search["seed_validation_rmse"]


def test_candidates_fan_out_one_step_each_with_the_same_result(run, search_run):
    result = run(search_config(candidates_per_step=1))
    assert result.success
    fits = {s for s in steps(result) if s.startswith("svd_hyperparameters.search_fit_1[")}
    assert fits == {
        f"svd_hyperparameters.search_fit_1[rung1_{label}]" for label in ("seed", "c1", "c2", "c3")
    }
    # In process, one step per rung forks the fits instead.
    assert {s for s in steps(search_run) if s.startswith("svd_hyperparameters.search_fit_1[")} == {
        "svd_hyperparameters.search_fit_1[rung1_seed_c1_c2_c3]"
    }
    one, many = (
        search_run.output_for_node("svd_hyperparameters"),
        result.output_for_node("svd_hyperparameters"),
    )
    assert one.params == many.params
    assert one.table["rmse"].tolist() == many.table["rmse"].tolist()


def test_fixed_mode_is_the_pipeline_without_tuning(run):
    result = run(FAST_CONFIG)
    assert result.success
    chosen = result.output_for_node("svd_hyperparameters")
    params = SVDParams(**FAST_SVD)
    assert chosen.mode == "fixed" and chosen.params == params and chosen.holdout.size == 0
    assert not {s for s in steps(result) if "search_fit" in s}
    # The CV of the plain folds (no holdout) and a plain fit on every rating, as before.
    dataset = result.output_for_node("surprise_dataset")
    today = cross_validate_svd(dataset, params, CVSettings(n_folds=4, seed=42))
    report = result.output_for_node("cv_report").folds
    figures = [c for c in today.columns if c != "fold" and not c.endswith("_time")]
    np.testing.assert_array_equal(report[figures].to_numpy(), today[figures].to_numpy())
    model = result.output_for_node("svd_model")
    plain = fit_svd(dataset.build_full_trainset(), params)
    for name in ("pu", "qi", "bu", "bi"):
        assert np.array_equal(getattr(model, name), getattr(plain, name))
    assert result.output_for_node("model_artifact")["hyperparameter_search"]["mode"] == "fixed"


def test_champion_configuration_is_compared_on_todays_ratings(run, store, demo_db):
    # A champion trained with other hyperparameters...
    champion_svd = {**FAST_SVD, "n_factors": 2, "n_epochs": 10}
    assert run(fixed_config(champion_svd)).success
    champion = store.latest_manifest()
    # ...then noisy re-ratings arrive: today's data is harder than the champion's was.
    ratings = demo_db.read_ratings()
    rng = np.random.RandomState(0)
    noisy = ratings.sample(300, random_state=0).assign(
        rating=rng.randint(1, 6, 300).astype(float), timestamp=ratings["timestamp"].max() + 1
    )
    demo_db.insert_ratings(noisy[["user_id", "movie_id", "rating", "timestamp"]])

    config = search_config(n_iter=2)
    config["ops"]["model_artifact_gates"] = {"config": {"rmse_tolerance": 0.0}}
    result = run(config)
    gate = checks_of(result)["not_worse_than_champion"]
    search = result.output_for_node("model_artifact")["hyperparameter_search"]
    # The champion's configuration ran as a candidate, at full size, on today's split.
    table = result.output_for_node("svd_hyperparameters").table
    assert {"champion", "seed"} <= set(table.loc[table["rung"] == 2, "label"])
    assert search["champion_version"] == champion["version"]
    assert gate.metadata["same_data"].value is True
    assert gate.metadata["champion_rmse"].value == search["champion_validation_rmse"]
    assert "validation RMSE on today's ratings" in gate.description
    assert gate.passed  # (beats_baseline judges the candidate on its own)
    # Compared with the figure the champion recorded on its own (easier) data, the candidate
    # would have failed: that was the old gate.
    cv_rmse = result.output_for_node("model_artifact")["cv_metrics"]["rmse_mean"]
    assert cv_rmse > champion["cv_metrics"]["rmse_mean"]


def test_first_run_failing_a_gate_publishes_most_popular_then_a_passing_model_replaces_it(
    run, store, demo_db
):
    # A movie marked without a rating (NULL): never on that user's shelf, and not a rating.
    before = demo_db.read_ratings()
    user = int(before["user_id"].iloc[0])
    top = before.groupby("movie_id").size().sort_values(ascending=False).index
    marked = int(
        next(m for m in top if m not in set(before.loc[before.user_id == user, "movie_id"]))
    )
    demo_db.insert_ratings(
        pd.DataFrame(
            {"user_id": [user], "movie_id": [marked], "rating": [np.nan], "timestamp": [0]}
        )
    )
    bad = run(fixed_config(BAD_SVD))
    assert not bad.success
    assert not checks_of(bad)["beats_baseline"].passed
    assert store.latest_manifest() is None
    ratings = demo_db.read_ratings().dropna(subset=["rating"])
    table = demo_db.read_predictions()
    assert marked not in set(table.loc[table["user_id"] == user, "movie_id"])
    # Every user has a shelf: their 10 most-rated unrated movies.
    assert set(table["user_id"]) == set(ratings["user_id"])
    assert (table.groupby("user_id").size() == 10).all()
    assert set(table["source"]) == {"popular"} and set(table["model_version"]) == {"most-popular"}
    rated = set(zip(ratings["user_id"], ratings["movie_id"], strict=True))
    assert not any(
        (u, m) in rated for u, m in zip(table["user_id"], table["movie_id"], strict=True)
    )
    # Ranked by number of ratings: each user's first is the most-rated movie they did not rate.
    counts = ratings.groupby("movie_id").size()
    for user, movie in table.loc[table["rank"] == 1, ["user_id", "movie_id"]].head(20).values:
        unrated = counts.drop(ratings.loc[ratings["user_id"] == user, "movie_id"])
        assert counts[movie] == unrated.max()
    # Left to the gates' step, which wrote it when beats_baseline failed (test_predictions.py).
    assert meta(bad, "fallback_predictions")["deferred"] is True

    good = run(fixed_config())
    assert good.success
    champion = store.latest_manifest()["version"]
    table = demo_db.read_predictions()
    assert set(table["model_version"]) == {champion} and set(table["user_id"]) == set(
        ratings["user_id"]
    )

    # With a champion, a failing candidate keeps the champion's suggestions.
    again = run(fixed_config(BAD_SVD))
    assert not again.success and meta(again, "fallback_predictions")["published"] is False
    pd.testing.assert_frame_equal(demo_db.read_predictions(), table)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"validation_fraction": 1.5}, "validation_fraction must be in (0, 1), got 1.5"),
        ({"param_grid": {"biased": [0.0]}}, "param_grid: param_grid keys ['biased']"),
    ],
)
def test_bad_search_config_fails_with_a_clear_message(run, store, overrides, message):
    result = run(search_config(**overrides))
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "svd_hyperparameters.search_plan"
    assert message in failure.step_failure_data.error.message
    assert store.latest_manifest() is None


def test_an_unknown_tuning_mode_is_refused_before_the_run_starts(run, store):
    # `tuning` is a Literal: Dagster's config check names the field and the value.
    with pytest.raises(dg.DagsterInvalidConfigError, match="tuning not in enum.*got grid"):
        run(search_config(tuning="grid"))
    assert store.latest_manifest() is None
