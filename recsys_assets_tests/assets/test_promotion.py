"""Promotion through Dagster runs: all or nothing against a damaged store, a failed
`user_predictions` write, and the run summary saying exactly what changed."""

from __future__ import annotations

import time

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from recsys_assets.assets.artifact import model_artifact
from recsys_assets.cli.summary import summarize
from recsys_assets_tests.assets.test_gates import BAD_SVD, checks_of, config, materialized


def _history_champion(store) -> str:
    return [e for e in store.history() if not e["rolled_back_at"]][-1]["version"]


def _summary(result) -> str:
    return "\n".join(summarize(result, None, time.perf_counter()).lines)


def test_a_garbage_history_is_kept_aside_and_rebuilt_by_the_next_promotion(run, store):
    assert run(config()).success
    (store.root / "champions.json").write_text("{garbage")
    second = run(config())
    assert second.success, _summary(second)
    version = second.output_for_node("model_artifact")["version"]
    assert store.load_latest()[1]["version"] == _history_champion(store) == version
    assert list(store.root.glob("champions.json.damaged-*"))
    repairs = [
        e.event_specific_data.materialization.metadata["store_repairs"].value
        for e in second.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
        and e.event_specific_data.materialization.asset_key.to_user_string() == "champion_model"
    ]
    assert "champions.json" in repairs[0] and "rebuilt" in repairs[0]


def test_a_store_that_cannot_be_read_fails_the_run_and_leaves_the_predictions(run, store, demo_db):
    assert run(config()).success
    table = demo_db.read_predictions()
    (store.root / "latest.json").write_text("{")
    (store.root / "champions.json").write_text("{garbage")
    result = run(config())
    assert not result.success
    # Not "no champion": no most-popular shelf over the champion's lists, no first-model pass.
    pd.testing.assert_frame_equal(demo_db.read_predictions(), table)
    assert not {"champion_model", "user_predictions", "fallback_predictions"} & materialized(result)
    passed = [key for key, check in checks_of(result).items() if check.passed]
    assert "model_artifact:not_worse_than_champion" not in passed
    assert "cannot tell the champion" in _summary(result)


@dg.asset_check(asset=model_artifact, blocking=True)
def other_runs_save_candidates(context) -> dg.AssetCheckResult:
    """Between this run's model_artifact and its champion_model, 25 newer materializations of
    model_artifact from elsewhere (as daemon runs beside a `recsys run` would add)."""
    for i in range(25):
        context.instance.report_runless_asset_event(
            dg.AssetMaterialization("model_artifact", metadata={"version": f"elsewhere-{i}"})
        )
    return dg.AssetCheckResult(passed=True)


def test_champion_model_finds_its_candidate_among_any_number_of_materializations(
    recsys_home, demo_db, instance, store
):
    from recsys_assets.definitions import all_assets, all_checks
    from recsys_assets_tests.conftest import make_resources

    result = dg.materialize(
        [*all_assets, *all_checks, other_runs_save_candidates],
        resources=make_resources(recsys_home, demo_db),
        run_config=config(),
        instance=instance,
        raise_on_error=False,
    )
    assert result.success, _summary(result)
    assert store.latest_manifest()["version"] == result.output_for_node("model_artifact")["version"]


def _block_prediction_writes(db, blocked: bool) -> None:
    """A real write failure in the app database (not transient: no retry hides it)."""
    with db.engine().begin() as conn:
        if blocked:
            conn.exec_driver_sql(
                "CREATE TRIGGER no_predictions BEFORE INSERT ON user_predictions "
                "BEGIN SELECT RAISE(ABORT, 'user_predictions is not writable'); END"
            )
        else:
            conn.exec_driver_sql("DROP TRIGGER no_predictions")


def test_a_failed_predictions_write_after_a_promotion_is_said_and_repaired_next_run(
    run, store, demo_db
):
    first = run(config())
    old = first.output_for_node("model_artifact")["version"]
    _block_prediction_writes(demo_db, True)
    second = run(config())
    assert not second.success
    new = second.output_for_node("model_artifact")["version"]
    assert store.load_latest()[1]["version"] == _history_champion(store) == new
    summary = _summary(second)
    assert f"{new} promoted" in summary and "NOT promoted" not in summary
    assert f"NOT the champion's: user_predictions holds model {old}'s" in summary
    assert set(demo_db.read_predictions()["model_version"]) == {old}

    # The next run republishes from the champion even though its own candidate fails a gate.
    _block_prediction_writes(demo_db, False)
    third = run(config(BAD_SVD))
    assert not third.success
    assert store.latest_manifest()["version"] == new
    assert set(demo_db.read_predictions()["model_version"]) == {new}
    summary = _summary(third)
    assert "NOT promoted; latest stays with the champion" in summary
    assert "holds the champion's suggestions (republished)" in summary
    # And a run after that has nothing to repair.
    fourth = run(config(BAD_SVD))
    assert "holds the champion's suggestions (unchanged)" in _summary(fourth)
    with demo_db.engine().connect() as conn:
        versions = conn.execute(sa.text("SELECT DISTINCT model_version FROM user_predictions"))
        assert [v for (v,) in versions] == [new]


def test_champion_model_alone_refuses_an_earlier_runs_candidate(run, store):
    """champion_model takes model_artifact as an input: the stored candidate of a run whose
    gates failed is not promoted by materializing champion_model on its own later."""
    good = run(config())
    assert good.success
    bad = run(config(BAD_SVD))
    assert not bad.success and "champion_model" not in materialized(bad)
    candidate = bad.output_for_node("model_artifact")["version"]
    alone = run({}, selection=["champion_model"])
    assert not alone.success
    failure = next(e for e in alone.all_events if e.is_step_failure)
    assert f"not {candidate}" in failure.step_failure_data.error.message
    assert store.load_latest()[1]["version"] == good.output_for_node("model_artifact")["version"]
