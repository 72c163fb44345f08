"""Materialize the whole graph in process and check every asset's contract."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from surprise import SVD, Dataset

from recsys_assets.assets.config import training_run_config
from recsys_assets.definitions import all_assets, all_checks, defs
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.ranking import RankingPolicy, ShippedModel, item_counts, rank_users
from recsys_assets.ml.selection.cv_result import CVResult
from recsys_assets.ml.training import SVDParams
from recsys_assets_tests.conftest import FAST_CONFIG, FAST_SVD, make_resources


def _materialize(home, db, run_config=FAST_CONFIG, raise_on_error=True):
    return dg.materialize(
        [*all_assets, *all_checks],
        resources=make_resources(home, db),
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def _meta(result, asset):
    return {
        k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()
    }


def test_definitions_load():
    assert {k.to_user_string() for k in defs.resolve_all_asset_keys()} >= {
        "ratings_df",
        "surprise_dataset",
        "cv_report",
        "svd_model",
        "model_artifact",
        "user_predictions",
    }
    defs.resolve_job_def("training_job")


@pytest.fixture
def graph_run(recsys_home, demo_db):
    result = _materialize(recsys_home, demo_db)
    assert result.success
    return result


def test_ratings_df(graph_run, demo_db):
    df = graph_run.output_for_node("ratings_df")
    assert list(df.columns) == ["user_id", "movie_id", "rating", "timestamp"]
    meta = _meta(graph_run, "ratings_df")
    assert meta["rows_read"] == len(demo_db.read_ratings())
    assert meta["rows_kept"] == len(df) and meta["rows_dropped"] == 0
    assert meta["users"] == df["user_id"].nunique() and meta["movies"] == df["movie_id"].nunique()
    assert meta["rating_min"] == 1.0 and meta["rating_max"] == 5.0
    assert isinstance(meta["rating_mean"], float)
    assert "| user_id |" in meta["preview"]


def test_surprise_dataset_scale_from_data(graph_run):
    dataset = graph_run.output_for_node("surprise_dataset")
    assert isinstance(dataset, Dataset)
    assert dataset.reader.rating_scale == (1.0, 5.0)
    assert len(dataset) == len(graph_run.output_for_node("ratings_df"))


def test_cv_report_table_and_metadata(graph_run):
    cv = graph_run.output_for_node("cv_report")
    assert isinstance(cv, CVResult) and list(cv.folds["fold"]) == [1, 2, 3, 4]
    folds = cv.folds
    assert (folds["fit_time"] > 0).all() and (folds["test_time"] > 0).all()
    meta = _meta(graph_run, "cv_report")
    for key in ("rmse_mean", "rmse_std", "mae_mean", "mae_std"):
        assert isinstance(meta[key], float)
    assert 0.5 < meta["rmse_mean"] < 1.5
    assert meta["folds"].count("\n") == 7  # header, rule, 4 folds, mean, std
    assert cv.params.n_epochs == FAST_SVD["n_epochs"] and cv.n_folds == meta["n_folds"] == 4
    assert meta["shipped_list"] == cv.policy.ranker


def test_cv_folds_share_one_forked_step_in_process(graph_run):
    # In process, one fan-out step forks a worker per fold (the fast path on one machine).
    steps = {e.step_key for e in graph_run.all_events if e.is_step_success}
    assert {s for s in steps if s.startswith("cv_report.cv_fold[")} == {
        "cv_report.cv_fold[folds_1_2_3_4]"
    }
    assert _meta(graph_run, "cv_report")["fold_steps"] == 1


def test_cv_folds_per_step_is_configurable(recsys_home, demo_db, graph_run):
    config = training_run_config(n_folds=4, top_n=10, tuning="fixed", **FAST_SVD)
    config["ops"]["cv_report"]["config"]["folds_per_step"] = 1
    result = _materialize(recsys_home, demo_db, run_config=config)
    steps = {e.step_key for e in result.all_events if e.is_step_success}
    assert {f"cv_report.cv_fold[folds_{k}]" for k in range(1, 5)} <= steps
    # Same folds, same seed: the same numbers whichever way the folds are split into steps.
    meta = _meta(result, "cv_report")
    assert meta["fold_steps"] == 4
    assert meta["rmse_mean"] == _meta(graph_run, "cv_report")["rmse_mean"]
    # Every per-fold figure (baselines, ranking metrics, chosen weights), not only RMSE.
    split, whole = result.output_for_node("cv_report"), graph_run.output_for_node("cv_report")
    figures = [c for c in whole.folds.columns if not c.endswith("_time")]
    pd.testing.assert_frame_equal(split.folds[figures], whole.folds[figures])
    assert (split.policy, split.ease) == (whole.policy, whole.ease)


def test_engine_switch_gives_the_same_models_and_is_recorded(recsys_home, demo_db, graph_run):
    # The default fits with the compiled loop; "surprise" runs SVD.fit itself: same numbers.
    config = training_run_config(n_folds=4, top_n=10, tuning="fixed", engine="surprise", **FAST_SVD)
    result = _materialize(recsys_home, demo_db, run_config=config)
    compiled, surprise = graph_run.output_for_node("svd_model"), result.output_for_node("svd_model")
    for name in ("pu", "qi", "bu", "bi"):
        assert np.array_equal(getattr(compiled, name), getattr(surprise, name)), name
    split, whole = result.output_for_node("cv_report"), graph_run.output_for_node("cv_report")
    figures = [c for c in whole.folds.columns if not c.endswith("_time")]
    pd.testing.assert_frame_equal(split.folds[figures], whole.folds[figures])
    assert (
        _meta(graph_run, "svd_model")["fit_engine"],
        _meta(result, "svd_model")["fit_engine"],
    ) == (
        "compiled",
        "surprise",
    )
    assert _meta(result, "cv_report")["fit_engine"] == "surprise"
    assert result.output_for_node("model_artifact")["fit_engine"] == "surprise"


def test_svd_model(graph_run):
    model = graph_run.output_for_node("svd_model")
    assert isinstance(model, SVD)
    assert (model.n_epochs, model.n_factors, model.lr_bu, model.reg_bu) == (30, 5, 0.02, 0.1)
    meta = _meta(graph_run, "svd_model")
    assert isinstance(meta["fit_seconds"], float)
    assert 0 < meta["training_rmse"] < _meta(graph_run, "cv_report")["rmse_mean"]
    assert "training" in meta["note"]


def test_model_artifact(graph_run, recsys_home):
    manifest = graph_run.output_for_node("model_artifact")
    root = recsys_home / "models" / "surprise"
    assert (root / f"{manifest['version']}.pkl").is_file()
    on_disk = json.loads((root / f"{manifest['version']}.json").read_text())
    assert on_disk["sha256"] == manifest["sha256"]
    for key in (
        "version",
        "created_at",
        "sha256",
        "hyperparameters",
        "cv_metrics",
        "data_fingerprint",
        "packages",
    ):
        assert key in on_disk, key
    assert on_disk["hyperparameters"]["n_epochs"] == FAST_SVD["n_epochs"]
    assert on_disk["cv_metrics"]["n_folds"] == 4
    assert on_disk["data_fingerprint"]["rows"] == len(graph_run.output_for_node("ratings_df"))
    assert "scikit-surprise" in on_disk["packages"] and "numba" in on_disk["packages"]
    assert on_disk["fit_engine"] == "compiled"
    assert json.loads((root / "latest.json").read_text())["version"] == manifest["version"]


def test_user_predictions_table(graph_run, demo_db):
    ratings = graph_run.output_for_node("ratings_df")
    model = graph_run.output_for_node("svd_model")
    table = demo_db.read_predictions()
    meta = _meta(graph_run, "user_predictions")
    assert meta["users"] == ratings["user_id"].nunique() == table["user_id"].nunique()
    assert meta["rows"] == len(table) == meta["users"] * 10
    assert set(table["rank"]) == set(range(1, 11))
    assert (table["model_version"] == meta["model_version"]).all()
    rated = set(zip(ratings["user_id"], ratings["movie_id"], strict=True))
    assert not any(
        (u, m) in rated for u, m in zip(table["user_id"], table["movie_id"], strict=True)
    )
    sample = table.sample(200, random_state=0)
    expected = [
        model.predict(u, m).est for u, m in zip(sample["user_id"], sample["movie_id"], strict=True)
    ]
    np.testing.assert_allclose(sample["score"], expected, rtol=1e-9)
    # Ranks follow the champion's ranking policy (recorded in its manifest), not the score.
    manifest = graph_run.output_for_node("model_artifact")
    factors = SVDFactors.from_svd(model)
    counts = item_counts(factors.raw_iids, ratings["movie_id"].to_numpy())
    expected = rank_users(
        ShippedModel(factors, counts, RankingPolicy.from_manifest(manifest)),
        ratings["user_id"].unique(),
        (ratings["user_id"].to_numpy(), ratings["movie_id"].to_numpy()),
        n=10,
    )
    pd.testing.assert_frame_equal(
        table[["user_id", "movie_id", "rank", "source"]],
        expected[["user_id", "movie_id", "rank", "source"]],
        check_dtype=False,
    )
    assert set(table["source"]) <= {"svd", "popular"}


def test_second_run_replaces_predictions(graph_run, recsys_home, demo_db):
    first = _meta(graph_run, "user_predictions")["model_version"]
    second = _materialize(recsys_home, demo_db)
    version = _meta(second, "user_predictions")["model_version"]
    assert version != first
    table = demo_db.read_predictions()
    assert set(table["model_version"]) == {version}
    assert len(table) == _meta(second, "user_predictions")["rows"]


def test_empty_database_fails_with_a_clear_message(recsys_home, ratings_db):
    result = _materialize(recsys_home, ratings_db, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "ratings_df"
    assert "no usable ratings" in failure.step_failure_data.error.message


def test_too_few_ratings_fail_with_a_clear_message(recsys_home, ratings_db):
    ratings_db.insert_movies(pd.DataFrame({"id": [1, 2], "title": ["A", "B"]}))
    ratings_db.insert_ratings(
        pd.DataFrame(
            {
                "user_id": [1, 2, 3],
                "movie_id": [1, 2, 1],
                "rating": [4.0, 3.0, 5.0],
                "timestamp": [1, 2, 3],
            }
        )
    )
    result = _materialize(recsys_home, ratings_db, raise_on_error=False)
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "too few ratings" in failure.step_failure_data.error.message


def test_bad_input_keeps_last_good_model_and_predictions(graph_run, recsys_home, demo_db):
    before = demo_db.read_predictions()
    latest = (recsys_home / "models" / "surprise" / "latest.json").read_text()
    # Every rating now unusable: out of the configured scale.
    with demo_db.engine().begin() as conn:
        conn.exec_driver_sql("UPDATE ratings SET rating = 9")
    result = _materialize(recsys_home, demo_db, raise_on_error=False)
    assert not result.success
    assert (recsys_home / "models" / "surprise" / "latest.json").read_text() == latest
    pd.testing.assert_frame_equal(demo_db.read_predictions(), before)


def test_one_source_for_the_hyperparameters(graph_run):
    # cv_report, svd_model and the manifest all hold what svd_hyperparameters chose.
    chosen = graph_run.output_for_node("svd_hyperparameters")
    assert chosen.mode == "fixed" and chosen.holdout.size == 0
    assert chosen.params.as_dict() == {**SVDParams().as_dict(), **FAST_SVD}
    assert graph_run.output_for_node("cv_report").params == chosen.params
    manifest = graph_run.output_for_node("model_artifact")
    assert manifest["hyperparameters"] == chosen.params.as_dict()
    assert manifest["hyperparameter_search"]["mode"] == "fixed"
    model = graph_run.output_for_node("svd_model")
    assert (model.n_factors, model.n_epochs) == (FAST_SVD["n_factors"], FAST_SVD["n_epochs"])


def test_graph_on_the_django_preset(recsys_home):
    from recsys_assets.data.demo import generate_demo_ratings
    from recsys_assets.db import RatingsStore, create_django_tables, make_engine

    db = RatingsStore(f"sqlite:///{recsys_home / 'app.db'}", preset="django")
    create_django_tables(make_engine(db.url, create=True))
    db.ensure_schema()
    movies, ratings = generate_demo_ratings(n_users=80, n_movies=100, n_ratings=3000, seed=2)
    db.insert_movies(movies)
    db.insert_ratings(ratings)
    with db.engine().begin() as conn:  # one rating deactivated, one with a NULL value
        conn.exec_driver_sql("UPDATE ratings_rating SET active = 0 WHERE id = 1")
        conn.exec_driver_sql("UPDATE ratings_rating SET value = NULL WHERE id = 2")
        # Ids SQLite let through as text: dropped and counted by column, not a crash.
        conn.exec_driver_sql("UPDATE ratings_rating SET user_id = 'bob' WHERE id = 3")
        conn.exec_driver_sql("UPDATE ratings_rating SET object_id = '4.5' WHERE id = 4")
    result = _materialize(recsys_home, db)
    meta = _meta(result, "ratings_df")
    assert meta["rows_read"] == len(ratings) - 1
    assert meta["dropped_null_rating"] == 1 and meta["rows_kept"] == len(ratings) - 4
    assert meta["dropped_bad_user_id"] == 1 and meta["dropped_bad_movie_id"] == 1
    table = db.read_predictions()
    assert len(table) == 10 * meta["users"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("multiprocess", "multiprocess"), ("in_process", "in_process"), (None, "multiprocess")],
)
def test_executor_from_environment(monkeypatch, name, expected):
    from recsys_assets import definitions

    if name is None:
        monkeypatch.delenv("RECSYS_EXECUTOR", raising=False)
    else:
        monkeypatch.setenv("RECSYS_EXECUTOR", name)
    job = definitions.build_training_job()
    assert job.executor_def.name == expected
    # The fan-out steps learn the same choice from a resource, not from the executor.
    assert definitions.build_resources()["executor_layout"].executor == expected


def test_celery_executor_needs_a_broker(monkeypatch):
    from recsys_assets import definitions

    monkeypatch.setenv("RECSYS_EXECUTOR", "celery")
    monkeypatch.delenv("RECSYS_CELERY_BROKER_URL", raising=False)
    with pytest.raises(ValueError, match="RECSYS_CELERY_BROKER_URL"):
        definitions.build_training_job()
    monkeypatch.setenv("RECSYS_CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    assert definitions.build_training_job().executor_def.name == "celery"
    monkeypatch.setenv("RECSYS_EXECUTOR", "threads")
    with pytest.raises(ValueError, match="RECSYS_EXECUTOR='threads' is not one of"):
        definitions.build_training_job()
