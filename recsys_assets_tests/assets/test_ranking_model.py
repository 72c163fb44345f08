"""`ranking_model` (EASE) through the pipeline: shipped when better on validation, the same list in
`user_predictions`, `Recommender.recommend`, `recsys recommend` and the CV evaluation; its gate."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from recsys_assets.checks import RankingGateConfig, shipped_ranking_not_worse_than_champion
from recsys_assets.cli import main
from recsys_assets.definitions import all_assets, all_checks
from recsys_assets.ml.arrays import Ratings
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets.ml.ease import EASEModel
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.model_bundle import ModelBundle
from recsys_assets.ml.ranking import ranking_metrics
from recsys_assets.ml.selection.evaluation import ranking_evals
from recsys_assets.serving import Recommender
from recsys_assets_tests.conftest import FAST_CONFIG, make_resources
from recsys_assets_tests.ops.test_refresh_predictions import _refresh


@pytest.fixture
def store(recsys_home):
    return ArtifactStore(str(recsys_home / "models" / "surprise"))


def test_ease_ships_when_better_and_every_path_ranks_the_same(
    recsys_home, clustered_db, store, capsys
):
    result = dg.materialize(
        [*all_assets, *all_checks],
        resources=make_resources(recsys_home, clustered_db),
        run_config=FAST_CONFIG,
    )
    assert result.success
    cv = result.output_for_node("cv_report")
    folds = cv.folds
    # Chosen on validation: EASE's validation NDCG beat the blend's; the test folds agree.
    assert cv.policy.ranker == "ease"
    assert folds["ease_validation_ndcg"].sum() > folds["blend_validation_ndcg"].sum()
    assert folds["ease_ndcg"].mean() > folds["blend_ndcg"].mean()
    lam = cv.ease.lam
    assert lam == pytest.approx(float(np.median(folds["ease_lambda"].astype(float))))

    # The artifact carries the EASE model fitted by `ranking_model`; the manifest says so.
    ease = result.output_for_node("ranking_model")
    assert isinstance(ease, EASEModel) and ease.lam == lam
    model, manifest = store.load_latest()
    assert manifest["ranking"]["ranker"] == "ease"
    assert manifest["ranking_model"] == {**ease.describe(), "shipped": True}
    assert manifest["cv_metrics"]["shipped_ndcg_mean"] == pytest.approx(
        folds["shipped_ndcg"].mean()
    )
    assert isinstance(model, ModelBundle) and model.policy == cv.policy
    np.testing.assert_array_equal(model.ease.weights, ease.weights)

    # user_predictions: EASE for every (warm) user, score = the SVD's predicted rating.
    table = clustered_db.read_predictions()
    assert set(table["source"]) == {"ease"}
    svd = result.output_for_node("svd_model")
    for row in table.head(20).itertuples():
        assert row.score == pytest.approx(svd.predict(row.user_id, row.movie_id).est)

    # Recommender.recommend: the same lists, scores and source, for every user.
    rec = Recommender(store)
    for user, rows in table.groupby("user_id"):
        got = rec.recommend(user, n=10)
        assert [r.movie_id for r in got] == rows["movie_id"].tolist()
        assert [r.score for r in got] == pytest.approx(rows["score"].tolist())
        assert {r.source for r in got} == {"ease"}

    # `recsys recommend`: the same list, and which model ranked it.
    user = int(table["user_id"].iloc[0])
    titles = clustered_db.movie_titles()
    capsys.readouterr()
    assert main(["recommend", str(user), "--n", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"user {user}: top 10 from model")
    assert "ranked by the EASE ranking model" in out[1]
    expected = table.loc[table["user_id"] == user, "movie_id"].tolist()
    rows = [line for line in out[2:] if not line.startswith("#") and not line.startswith("rank")]
    assert [line.strip().split("  ", 2)[2] for line in rows] == [titles[m] for m in expected]

    # The CV evaluation scores exactly this list: its metrics on any relevant set equal
    # ranking_metrics of the published table.
    ratings = result.output_for_node("ratings_df")
    rng = np.random.default_rng(5)
    held = pd.DataFrame(
        {"user_id": rng.integers(1, 121, 3000), "movie_id": rng.integers(1, 151, 3000)}
    ).merge(ratings[["user_id", "movie_id"]], how="left", indicator=True)
    held = held[held["_merge"] == "left_only"][["user_id", "movie_id"]].drop_duplicates()
    train = Ratings(
        ratings["user_id"].to_numpy(), ratings["movie_id"].to_numpy(), ratings["rating"].to_numpy()
    )
    test = Ratings(held["user_id"].to_numpy(), held["movie_id"].to_numpy(), np.ones(len(held)))
    (in_cv,) = ranking_evals(
        SVDFactors.from_svd(svd),
        train,
        [test],
        [],
        ease_models=[ease],
        ease_min_user_ratings=manifest["ranking"]["min_user_ratings"],
    )[0]
    published = ranking_metrics(table, held, k=10)
    for metric in ("precision", "recall", "ndcg"):
        assert in_cv[metric] == pytest.approx(published[metric], abs=1e-12)

    # The incremental refresh ranks with EASE too: the same rows for a user without new
    # ratings, and a user's new ratings leave their list.
    top = table.loc[table["user_id"] == user, "movie_id"].head(2).tolist()
    clustered_db.insert_ratings(
        pd.DataFrame({"user_id": user, "movie_id": top, "rating": [5.0, 4.0], "timestamp": 9})
    )
    other = int(table["user_id"].iloc[-1])
    assert _refresh(recsys_home, clustered_db, [user, other]).success
    after = clustered_db.read_predictions()
    cols = ["user_id", "movie_id", "rank", "score", "source"]
    pd.testing.assert_frame_equal(
        after.loc[after["user_id"] == other, cols].reset_index(drop=True),
        table.loc[table["user_id"] == other, cols].reset_index(drop=True),
    )
    mine = after[after["user_id"] == user]
    assert len(mine) == 10 and set(mine["source"]) == {"ease"}
    assert not set(top) & set(mine["movie_id"])


def _candidate(ndcg: float | None, legacy: bool = False) -> dict:
    key = "blend_ndcg_mean" if legacy else "shipped_ndcg_mean"
    return {
        "cv_metrics": {"rmse_mean": 0.9, **({key: ndcg} if ndcg is not None else {})},
        "ranking": {"ranker": "ease"},
    }


@pytest.mark.parametrize("legacy_champion", [False, True])
@pytest.mark.parametrize(("below", "passed"), [(0.01 - 1e-9, True), (0.01 + 1e-6, False)])
def test_shipped_ranking_gate_tolerance(store, legacy_champion, below, passed):
    # A champion saved before the ranking model existed shipped the blend: its NDCG counts.
    champion = store.save({"a": 1}, _candidate(0.40, legacy=legacy_champion), promote=True)
    candidate = {**_candidate(0.40 - below), "version": "20990101T000000Z-00000000"}
    result = shipped_ranking_not_worse_than_champion(
        RankingGateConfig(ndcg_tolerance=0.01), candidate, store
    )
    assert result.passed is passed
    assert result.metadata["champion_ndcg"].value == pytest.approx(0.40)
    assert result.metadata["champion_version"].value == champion["version"]
    verdict = "may be promoted" if passed else f"not promoted, {champion['version']} stays"
    assert verdict in result.description


def test_shipped_ranking_gate_without_champion_or_figure(store):
    first = {**_candidate(0.3), "version": "20990101T000000Z-00000000"}
    assert shipped_ranking_not_worse_than_champion(RankingGateConfig(), first, store).passed
    bare = {**_candidate(None), "version": "20990101T000000Z-00000001"}
    result = shipped_ranking_not_worse_than_champion(RankingGateConfig(), bare, store)
    assert not result.passed and "no CV NDCG@10" in result.description
