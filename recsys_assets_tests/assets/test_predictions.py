"""The most-popular shelf with no champion: left to the promotion gates when the run holds
them (written once, by whichever publishes), written up front when it does not; and the
republish decision read from the table itself."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from recsys_assets.cli.summary import summarize
from recsys_assets.db.predictions import ensure_predictions_table
from recsys_assets_tests.assets.test_gates import BAD_SVD, checks_of, config


def node_meta(result, node):
    events = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in events[-1].metadata.items()} if events else {}


@pytest.fixture
def writes(demo_db):
    """Rows inserted into user_predictions per model_version, counted by a trigger in the
    database itself: what every writer (an asset, a check step) really wrote."""
    ensure_predictions_table(demo_db.engine())
    with demo_db.engine().begin() as conn:
        conn.exec_driver_sql("CREATE TABLE prediction_writes (model_version TEXT)")
        conn.exec_driver_sql(
            "CREATE TRIGGER count_prediction_writes AFTER INSERT ON user_predictions "
            "BEGIN INSERT INTO prediction_writes VALUES (NEW.model_version); END"
        )

    def _writes() -> dict[str, int]:
        with demo_db.engine().connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT model_version, COUNT(*) FROM prediction_writes GROUP BY model_version"
            )
            return dict(rows.fetchall())

    return _writes


def test_a_first_run_that_passes_the_gates_writes_the_table_once(run, store, demo_db, writes):
    result = run(config())
    assert result.success
    champion = store.latest_manifest()["version"]
    fallback = node_meta(result, "fallback_predictions")
    assert fallback["deferred"] is True and fallback["published"] is False
    assert "model_artifact_gates" in fallback["reason"]
    table = demo_db.read_predictions()
    assert set(table["model_version"]) == {champion}
    # The most-popular shelf was never written: only the model's lists, once.
    assert writes() == {champion: len(table)}


def test_a_first_run_failing_a_gate_gets_the_shelf_from_the_gates_step(run, store, demo_db, writes):
    result = run(config(BAD_SVD))
    assert not result.success
    assert not checks_of(result)["model_artifact:beats_baseline"].passed
    assert store.latest_manifest() is None
    # Every user has the most-popular suggestions, written once.
    ratings = demo_db.read_ratings()
    table = demo_db.read_predictions()
    assert set(table["user_id"]) == set(ratings["user_id"])
    assert (table.groupby("user_id").size() == 10).all()
    assert set(table["model_version"]) == {"most-popular"} and set(table["source"]) == {"popular"}
    assert writes() == {"most-popular": len(table)}
    # fallback_predictions left it to the gates; their step recorded it as the shelf's write.
    assert node_meta(result, "fallback_predictions")["deferred"] is True
    shelf = node_meta(result, "model_artifact_gates")
    assert shelf["written_by"] == "model_artifact_gates" and shelf["rows"] == len(table)
    assert shelf["users"] == ratings["user_id"].nunique()
    summary = "\n".join(summarize(result, None, time.perf_counter()).lines)
    assert f"most-popular suggestions for all {shelf['users']} users" in summary


def test_a_run_without_the_gates_writes_the_shelf_itself(run, store, demo_db, writes):
    result = run({}, selection=["ratings_df", "fallback_predictions"])
    assert result.success and store.latest_manifest() is None
    shelf = node_meta(result, "fallback_predictions")
    assert shelf["published"] is True and "deferred" not in shelf
    table = demo_db.read_predictions()
    assert set(table["model_version"]) == {"most-popular"}
    assert set(table["user_id"]) == set(demo_db.read_ratings()["user_id"])
    assert writes() == {"most-popular": len(table)}


def test_gates_without_the_promotion_leave_the_shelf_to_fallback_predictions(
    run, store, demo_db, writes
):
    """A run that checks the candidate but would not publish it (no champion_model or
    user_predictions) writes the shelf up front, and the failing gates do not write it again."""
    upstream = [
        "ratings_df",
        "surprise_dataset",
        "evaluation_sample",
        "svd_hyperparameters",
        "cv_report",
    ]
    selection = [*upstream, "svd_model", "ranking_model", "model_artifact", "fallback_predictions"]
    run_config = config(BAD_SVD)
    del run_config["ops"]["user_predictions"]
    result = run(run_config, selection=selection)
    assert not result.success
    assert not checks_of(result)["model_artifact:beats_baseline"].passed
    assert node_meta(result, "fallback_predictions")["published"] is True
    assert not node_meta(result, "model_artifact_gates")
    assert writes() == {"most-popular": len(demo_db.read_predictions())}


def test_a_table_not_wholly_the_champions_is_republished(run, store, demo_db):
    """What the table holds is read from the table: a refresh of a few users with another
    model (here written directly) leaves it mixed, and the next run republishes the champion's
    lists even though its own candidate fails a gate."""
    assert run(config()).success
    champion = store.latest_manifest()["version"]
    table = demo_db.read_predictions()
    few = table[table["user_id"].isin(table["user_id"].unique()[:3])]
    demo_db.replace_predictions(few, "another-model", users=few["user_id"].unique().tolist())
    assert set(demo_db.read_predictions()["model_version"]) == {champion, "another-model"}
    again = run(config(BAD_SVD))
    assert not again.success and store.latest_manifest()["version"] == champion
    fallback = node_meta(again, "fallback_predictions")
    assert fallback["published"] is True and fallback["replaced_model_version"] == "unknown"
    pd.testing.assert_frame_equal(
        demo_db.read_predictions().drop(columns="created_at"),
        table.drop(columns="created_at"),
    )


def test_a_first_run_failing_before_its_gates_leaves_the_table_and_says_how_to_fill_it(
    run, store, demo_db, writes
):
    """No verdict, no shelf (the table is as before: here empty); `recsys run` says so, and
    materializing fallback_predictions on its own writes the shelf."""
    run_config = config()
    run_config["ops"]["cv_report"] = {"config": {"n_folds": 100_000}}
    result = run(run_config)
    assert not result.success and "model_artifact_gates" not in {
        e.step_key for e in result.all_events if e.is_step_success or e.is_step_failure
    }
    assert node_meta(result, "fallback_predictions")["deferred"] is True
    assert demo_db.read_predictions().empty and writes() == {}
    summary = "\n".join(summarize(result, None, time.perf_counter()).lines)
    assert "materialize fallback_predictions on its own" in summary
    alone = run({}, selection=["ratings_df", "fallback_predictions"])
    assert alone.success
    assert set(demo_db.read_predictions()["model_version"]) == {"most-popular"}
