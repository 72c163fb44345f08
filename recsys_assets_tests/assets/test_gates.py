"""Promotion gates and data checks, end to end through Dagster runs on one instance."""

from __future__ import annotations

import math

import dagster as dg
import pandas as pd
import pytest

from recsys_assets.assets.config import training_run_config
from recsys_assets.checks import (
    GatesConfig,
    PromotionConfig,
    RankingGateConfig,
    beats_baseline,
    not_worse_than_champion,
    ratings_within_scale,
    shipped_ranking_not_worse_than_champion,
)
from recsys_assets.definitions import all_assets, all_checks
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets_tests.conftest import FAST_SVD, make_resources

# One epoch at a tiny learning rate: barely moved from the global mean, worse than BaselineOnly.
BAD_SVD = {**FAST_SVD, "n_epochs": 1, "lr_all": 0.001}


def config(svd=FAST_SVD, **checks):
    run_config = training_run_config(n_folds=4, top_n=10, tuning="fixed", **svd)
    for op, op_config in checks.items():
        run_config["ops"][op] = {"config": op_config}
    return run_config


def checks_of(result):
    return {
        f"{e.event_specific_data.asset_key.to_user_string()}:{e.event_specific_data.check_name}": (
            e.event_specific_data
        )
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def materialized(result):
    return {
        e.event_specific_data.materialization.asset_key.to_user_string()
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }


def test_good_model_is_promoted_and_bad_model_is_not(run, store, demo_db):
    good = run(config())
    assert good.success
    checks = checks_of(good)
    assert checks["model_artifact:beats_baseline"].passed
    assert "no champion yet" in checks["model_artifact:not_worse_than_champion"].description
    champion = store.latest_manifest()["version"]
    assert champion == good.output_for_node("model_artifact")["version"]
    predictions = demo_db.read_predictions()

    bad = run(config(BAD_SVD))
    assert not bad.success
    gate = checks_of(bad)["model_artifact:beats_baseline"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert "not better, not promoted" in gate.description
    # The candidate is kept as a version, but latest and the predictions stay with the champion.
    assert "model_artifact" in materialized(bad)
    assert not {"champion_model", "user_predictions"} & materialized(bad)
    assert len(store.versions()) == 2
    assert store.latest_manifest()["version"] == champion
    pd.testing.assert_frame_equal(demo_db.read_predictions(), predictions)


def test_candidate_worse_than_champion_beyond_tolerance_is_not_promoted(run, store):
    assert run(config()).success
    champion = store.latest_manifest()["version"]
    # Same model quality, but a negative tolerance demands a strict improvement.
    result = run(config(model_artifact_gates={"rmse_tolerance": -0.5}))
    assert not result.success
    gate = checks_of(result)["model_artifact:not_worse_than_champion"]
    assert not gate.passed
    assert f"not promoted, {champion} stays" in gate.description
    assert gate.metadata["champion_version"].value == champion
    assert store.latest_manifest()["version"] == champion


def test_candidate_whose_shipped_list_ranks_worse_is_not_promoted(run, store, demo_db):
    assert run(config()).success
    champion = store.latest_manifest()["version"]
    predictions = demo_db.read_predictions()
    # Same NDCG@10, but a negative tolerance demands a strictly better shipped list.
    gate_config = {"ndcg_tolerance": -0.5}
    result = run(config(model_artifact_gates=gate_config))
    assert not result.success
    gate = checks_of(result)["model_artifact:shipped_ranking_not_worse_than_champion"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert f"not promoted, {champion} stays" in gate.description
    assert store.latest_manifest()["version"] == champion
    pd.testing.assert_frame_equal(demo_db.read_predictions(), predictions)


def test_rollback_restores_previous_champion_and_predictions_follow(run, store, demo_db):
    assert run(config()).success
    first = store.latest_manifest()["version"]
    assert run(config({**FAST_SVD, "random_state": 7})).success
    second = store.latest_manifest()["version"]
    assert second != first
    assert set(demo_db.read_predictions()["model_version"]) == {second}

    old, new = store.rollback()
    assert (old["version"], new["version"]) == (second, first)
    result = run({"ops": {"user_predictions": {"config": {"top_n": 10}}}}, ["user_predictions"])
    assert result.success
    table = demo_db.read_predictions()
    assert set(table["model_version"]) == {first}
    assert [e["version"] for e in store.history()] == [first, second]


def test_volume_check_blocks_training_on_a_half_empty_table(run, store, demo_db):
    first = run(config())
    assert first.success
    good_rows = len(first.output_for_node("ratings_df"))
    champion = store.latest_manifest()["version"]
    predictions = demo_db.read_predictions()
    with demo_db.engine().begin() as conn:
        conn.exec_driver_sql("DELETE FROM ratings WHERE id % 5 < 3")  # 60% gone
    result = run(config())
    assert not result.success
    volume = checks_of(result)["ratings_df:ratings_volume"]
    assert not volume.passed
    assert "down 60%" in volume.description
    assert materialized(result) == {"ratings_df"}  # nothing downstream ran
    assert store.latest_manifest()["version"] == champion
    assert len(store.versions()) == 1
    pd.testing.assert_frame_equal(demo_db.read_predictions(), predictions)

    # The failed run is not "the last successful materialization": the next read is still
    # compared with the good one. Allowing the drop explicitly lets the read through (the
    # model trained on 40% of the data then meets the gates on its own merits).
    again = run(config(ratings_df_checks={"max_drop_fraction": 0.7}))
    volume = checks_of(again)["ratings_df:ratings_volume"]
    assert volume.passed and volume.metadata["previous_rows"].value == good_rows


def test_ratings_within_scale_check():
    frame = pd.DataFrame({"rating": [1.0, 3.5, 6.0, None]})
    result = ratings_within_scale(frame, (0.5, 5.0))
    assert not result.passed and result.metadata["outside_scale"].value == 2
    assert ratings_within_scale(frame.dropna(), (0.5, 6.0)).passed


def test_ratings_within_scale_fails_without_a_scale():
    result = ratings_within_scale(pd.DataFrame({"rating": [1.0, 99.0]}), None)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert "no rating scale" in result.description


def _candidate(store, rmse, promote_it=False, baseline=1.0):
    metrics = {"baseline_rmse_mean": baseline}
    if rmse is not None:
        metrics["rmse_mean"] = rmse
    return store.save({"model": rmse}, {"cv_metrics": metrics}, promote=promote_it)


@pytest.mark.parametrize(
    ("candidate_rmse", "passed"),
    [(0.90, True), (0.9099, True), (0.91, True), (0.9101, False), (0.93, False)],
)
def test_champion_tolerance_edges(store, candidate_rmse, passed):
    """Champion 0.90, tolerance 0.01: up to 0.91 may be promoted, anything beyond may not."""
    _candidate(store, 0.90, promote_it=True)
    candidate = _candidate(store, candidate_rmse)
    result = not_worse_than_champion(PromotionConfig(rmse_tolerance=0.01), candidate, store)
    assert result.passed is passed
    assert result.metadata["margin"].value == pytest.approx(0.91 - candidate_rmse)


def test_candidate_without_cv_rmse_fails_both_gates(store):
    _candidate(store, 0.90, promote_it=True)
    candidate = _candidate(store, None)
    for result in (
        not_worse_than_champion(PromotionConfig(), candidate, store),
        beats_baseline(candidate),
    ):
        assert not result.passed and "no CV RMSE" in result.description


@pytest.mark.parametrize("chosen", [None, "absent"])
def test_search_without_the_candidates_validation_rmse_fails_the_gate(store, chosen):
    """The search scored the champion on today's data but has no figure for its own choice:
    a failed check naming what is missing, not a TypeError from formatting None."""
    champion = _candidate(store, 0.90, promote_it=True)["version"]
    search = {"champion_version": champion, "champion_validation_rmse": 0.91}
    if chosen != "absent":
        search["chosen_validation_rmse"] = chosen
    candidate = store.save(
        {"model": "c"},
        {
            "cv_metrics": {"rmse_mean": 0.90, "baseline_rmse_mean": 1.0},
            "hyperparameter_search": search,
        },
        promote=False,
    )
    result = not_worse_than_champion(PromotionConfig(), candidate, store)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert "none for its chosen configuration" in result.description
    assert champion in result.description and candidate["version"] in result.description


def test_model_artifact_retention_keeps_the_newest_and_every_champion(run, store, recsys_home):
    """Retention as `model_artifact` runs it, even with a damaged manifest on disk."""
    assert run(config()).success
    champion = store.latest_manifest()["version"]
    keep_one = {"model_artifact": {"config": {"keep_versions": 1}}}
    second = run(config(BAD_SVD))
    assert not second.success  # saved, not promoted
    rejected = second.asset_materializations_for_node("model_artifact")[0]
    rejected_version = rejected.metadata["version"].value
    # A damaged manifest of an old, non-champion version must not block retention.
    (store.root / f"{rejected_version}.json").write_text("{truncated")
    third_config = config(BAD_SVD)
    third_config["ops"].update({k: v for k, v in keep_one.items()})
    third = run(third_config)
    meta = third.asset_materializations_for_node("model_artifact")[0].metadata
    assert meta["versions_deleted"].value == 1
    newest = meta["version"].value
    assert {m["version"] for m in store.versions()} == {champion, newest}
    assert not (store.root / f"{rejected_version}.pkl").exists()
    assert store.latest_manifest()["version"] == champion


def test_unsigned_candidate_never_replaces_a_signed_champion(recsys_home, demo_db, instance):
    """Signing is sticky through the job: a run without the key saves its candidate but
    champion_model refuses to promote it, naming why."""
    home_store = str(recsys_home / "models" / "surprise")

    def run_with(store):
        return dg.materialize(
            [*all_assets, *all_checks],
            resources={**make_resources(recsys_home, demo_db), "model_store": store},
            run_config=config(),
            instance=instance,
            raise_on_error=False,
        )

    signed = ArtifactStore(home_store, signing_key="k1")
    assert run_with(signed).success
    champion = signed.latest_manifest()
    assert "signature" in champion
    predictions = demo_db.read_predictions()
    result = run_with(ArtifactStore(home_store))  # RECSYS_MODEL_SIGNING_KEY forgotten
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "champion_model"
    from recsys_assets.cli.summary import failure_cause

    cause = failure_cause(failure.step_failure_data.error)
    assert "refusing to promote unsigned model" in cause and champion["version"] in cause
    assert signed.load_latest()[1]["version"] == champion["version"]
    pd.testing.assert_frame_equal(demo_db.read_predictions(), predictions)


def _artifact(rmse=0.9, baseline=1.0, ndcg=0.4):
    metrics = {"rmse_mean": rmse, "baseline_rmse_mean": baseline, "shipped_ndcg_mean": ndcg}
    return {"version": "20990101T000000Z-00000000", "cv_metrics": metrics}


def _champion(store, **metrics):
    manifest = _artifact(**metrics)
    del manifest["version"]  # the store names it
    return store.save({"c": 1}, manifest, promote=True)


@pytest.mark.parametrize(
    ("rmse", "passed"),
    [(0.95, False), (math.nextafter(0.95, 0), True), (math.nextafter(0.95, 1), False)],
)
def test_beats_baseline_needs_a_strictly_lower_rmse(rmse, passed):
    """Equal to BaselineOnly is not better: the SVD must earn its place."""
    assert beats_baseline(_artifact(rmse=rmse, baseline=0.95)).passed is passed


def test_default_tolerances_are_one_hundredth():
    """`recsys run` and the job config leave both tolerances at their defaults."""
    assert PromotionConfig().rmse_tolerance == 0.01
    assert RankingGateConfig().ndcg_tolerance == 0.01
    gates = GatesConfig()
    assert (gates.rmse_tolerance, gates.ndcg_tolerance) == (0.01, 0.01)


@pytest.mark.parametrize(
    ("step", "passed"), [(0, True), (-1, False)], ids=["at-the-limit", "just-beyond"]
)
def test_gates_at_their_limits_with_the_default_tolerances(store, step, passed):
    """Champion RMSE 0.90 / NDCG 0.40: a candidate exactly 0.01 worse on either still passes
    its gate (the limit is inclusive); the next float beyond it does not."""
    champion = _champion(store, rmse=0.90, ndcg=0.40)
    rmse_limit, ndcg_floor = 0.90 + 0.01, 0.40 - 0.01
    rmse = rmse_limit if step == 0 else math.nextafter(rmse_limit, 1)
    ndcg = ndcg_floor if step == 0 else math.nextafter(ndcg_floor, 0)
    candidate = _artifact(rmse=rmse, ndcg=ndcg)
    rmse_gate = not_worse_than_champion(PromotionConfig(), candidate, store)
    ndcg_gate = shipped_ranking_not_worse_than_champion(RankingGateConfig(), candidate, store)
    assert rmse_gate.passed is passed and ndcg_gate.passed is passed
    assert rmse_gate.metadata["rmse_tolerance"].value == 0.01
    assert ndcg_gate.metadata["ndcg_tolerance"].value == 0.01
    assert ndcg_gate.metadata["champion_version"].value == champion["version"]


def _evaluated(max_ratings, sampled):
    total = 5000
    return {
        "max_ratings": max_ratings,
        "seed": 42,
        "users": 60 if sampled else 120,
        "ratings": 2400 if sampled else total,
        "total_users": 120,
        "total_ratings": total,
        "sampled": sampled,
    }


@pytest.mark.parametrize(
    ("champion_scope", "candidate_scope", "compared"),
    [
        (None, None, True),  # models from before the budget: both on every rating
        (None, (1_000_000, False), True),  # under the cap: every rating too
        ((2500, True), (2500, True), True),
        (None, (2500, True), False),
        ((2500, True), (1_000_000, False), False),
        ((2500, True), (4000, True), False),
    ],
)
def test_recorded_figures_are_compared_only_on_the_same_scope(
    store, champion_scope, candidate_scope, compared
):
    """A model fitted on a sample of the users scores lower than one fitted on every rating:
    the CV figures of two models are compared only when both were evaluated alike; otherwise
    the gate warns (not blocking) and says on what each was evaluated."""

    def save(scope, ndcg, promote_it):
        extra = {"evaluation": _evaluated(*scope)} if scope else {}
        metrics = {"rmse_mean": 0.90, "baseline_rmse_mean": 1.0, "shipped_ndcg_mean": ndcg}
        return store.save({"model": ndcg}, {"cv_metrics": metrics, **extra}, promote=promote_it)

    champion = save(champion_scope, 0.40, True)
    # Far worse than the champion: fails wherever the figures are compared.
    candidate = save(candidate_scope, 0.20, False)
    candidate["cv_metrics"]["rmse_mean"] = 0.99
    for result in (
        not_worse_than_champion(PromotionConfig(), candidate, store),
        shipped_ranking_not_worse_than_champion(RankingGateConfig(), candidate, store),
    ):
        assert not result.passed
        if compared:
            assert result.severity == dg.AssetCheckSeverity.ERROR
        else:
            assert result.severity == dg.AssetCheckSeverity.WARN
            assert "not compared" in result.description
            assert champion["version"] in result.description
            assert "sample of 60 of 120 users" in result.description
