"""`recsys_assets.serving` and the registry / recommend commands, on a trained pipeline."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from recsys_assets.cli import main
from recsys_assets.definitions import all_assets, all_checks
from recsys_assets.ml.artifacts import ArtifactIntegrityError, ArtifactSignatureError, ArtifactStore
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.ranking import RankingPolicy, ShippedModel, item_counts, rank_users
from recsys_assets.ml.stripped_svd import strip_svd
from recsys_assets.serving import Recommender
from recsys_assets_tests.assets.test_gates import config
from recsys_assets_tests.conftest import FAST_CONFIG, FAST_SVD, make_resources
from recsys_assets_tests.ml.test_ease import LONER, loner_models


@pytest.fixture
def trained(recsys_home, demo_db):
    def run(run_config=FAST_CONFIG, store=None):
        resources = make_resources(recsys_home, demo_db)
        if store is not None:
            resources["model_store"] = store
        result = dg.materialize(
            [*all_assets, *all_checks], resources=resources, run_config=run_config
        )
        assert result.success
        return result

    return run


@pytest.fixture
def store(recsys_home):
    return ArtifactStore(str(recsys_home / "models" / "surprise"))


def test_predict_equals_model_predict(trained, store, demo_db):
    result = trained()
    model = result.output_for_node("svd_model")
    rec = Recommender(store)
    ratings = result.output_for_node("ratings_df")
    users = [*ratings["user_id"].unique()[:15].tolist(), 77_777]
    movies = [*ratings["movie_id"].unique()[:15].tolist(), 66_666]
    for u in users:
        for m in movies:
            assert rec.predict(u, m) == pytest.approx(model.predict(u, m).est, abs=1e-12)


def test_recommend_matches_user_predictions(trained, store, demo_db):
    trained()
    rec = Recommender(store)
    table = demo_db.read_predictions()
    for user, rows in list(table.groupby("user_id"))[:40]:
        got = rec.recommend(user, n=10)
        assert [r.movie_id for r in got] == rows["movie_id"].tolist()
        assert [r.score for r in got] == pytest.approx(rows["score"].tolist())
        assert {r.source for r in got} == set(rows["source"])


def test_unknown_user_gets_the_popular_fallback(trained, store):
    result = trained()
    rec = Recommender(store)
    got = rec.recommend(123_456, n=5)
    assert len(got) == 5 and {r.source for r in got} == {"popular"}
    counts = result.output_for_node("ratings_df")["movie_id"].value_counts()
    top = counts.sort_values(ascending=False)
    assert [int(r.movie_id) for r in got][0] == int(top.index[0])
    assert [counts[r.movie_id] for r in got] == sorted(
        (counts[r.movie_id] for r in got), reverse=True
    )
    model = result.output_for_node("svd_model")
    assert got[0].score == pytest.approx(model.predict(123_456, got[0].movie_id).est)
    with pytest.raises(ValueError, match="n must be"):
        rec.recommend(1, n=0)


def test_reloads_when_latest_changes(trained, store):
    trained()
    rec = Recommender(store, check_interval=0)
    first = rec.version
    trained(config({**FAST_SVD, "random_state": 7}))
    assert rec.version != first == store.history()[0]["version"]
    store.rollback()
    assert rec.version == first


def test_signing_key_required_and_checked(trained, recsys_home, monkeypatch):
    root = str(recsys_home / "models" / "surprise")
    trained(store=ArtifactStore(root, signing_key="s3cret"))
    assert Recommender(ArtifactStore(root, signing_key="s3cret")).recommend(1, n=3)
    with pytest.raises(ArtifactSignatureError, match="does not match"):
        Recommender(ArtifactStore(root, signing_key="other")).recommend(1, n=3)
    # Saved without a key, loaded with one: refused as unsigned. (In a store of its own: an
    # unsigned model is never promoted over the signed champion above.)
    unsigned = str(recsys_home / "models" / "unsigned")
    trained(store=ArtifactStore(unsigned))
    with pytest.raises(ArtifactSignatureError, match="not signed"):
        Recommender(ArtifactStore(unsigned, signing_key="s3cret")).predict(1, 1)


def test_tampered_artifact_refused(trained, store):
    trained()
    pkl = next((store.root).glob("2*.pkl"))
    pkl.write_bytes(pkl.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ArtifactIntegrityError, match="checksum"):
        Recommender(store).recommend(1)


def test_model_with_surprises_full_trainset_is_refused_with_a_retrain_hint(tmp_path):
    # Models saved before 2026-11-27 pickled Surprise's own Trainset; serving no longer reads it.
    import pandas as pd
    from surprise import SVD, Dataset, Reader

    frame = pd.DataFrame({"u": [1, 1, 2, 3], "i": [1, 2, 2, 3], "r": [4.0, 2.0, 5.0, 3.0]})
    trainset = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
    store = ArtifactStore(tmp_path)
    store.save(SVD(n_factors=2, n_epochs=1).fit(trainset), {"algo": "SVD"})
    with pytest.raises(ArtifactIntegrityError, match="its trainset is a Trainset.*recsys run"):
        Recommender(store).recommend(1)


def test_models_commands(trained, store, capsys):
    trained()
    trained(config({**FAST_SVD, "random_state": 7}))
    first, second = (m["version"] for m in store.versions())
    capsys.readouterr()

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "CV RMSE" in out and f"{second}" in out and "champion" in out and "was" in out

    assert main(["models", "show", first]) == 0
    out = capsys.readouterr().out
    assert f'"version": "{first}"' in out and "champion now: no" in out

    assert main(["models", "rollback"]) == 0
    assert f"rolled back from {second} to {first}" in capsys.readouterr().out
    assert store.latest_manifest()["version"] == first

    assert main(["models", "promote", second]) == 0
    assert store.latest_manifest()["version"] == second
    capsys.readouterr()
    assert main(["models", "show", "nonsense"]) == 2
    assert "invalid model version" in capsys.readouterr().err


def test_recommend_command_prints_the_shipped_order_with_a_header(trained, demo_db, capsys):
    trained()
    table = demo_db.read_predictions()
    titles = demo_db.movie_titles()
    user = int(table.loc[table["source"] == "svd", "user_id"].iloc[0])
    shipped = table[table["user_id"] == user].head(3)
    capsys.readouterr()
    assert main(["recommend", str(user), "--n", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"user {user}: top 3 from model ")
    assert out[1].startswith("# ranked by the champion's blend: ")
    assert "x predicted rating + " in out[1] and out[1].endswith("(as user_predictions ships)")
    assert out[2] == "# score = the SVD's predicted rating for the user, shown for reference"
    assert out[3].split() == ["rank", "score", "title"]
    # The rows: user_predictions' order and scores, with the app's titles.
    assert out[4:] == [
        f"{rank:>4}  {score:>5.2f}  {titles[movie]}"
        for rank, score, movie in zip(
            shipped["rank"], shipped["score"], shipped["movie_id"], strict=True
        )
    ]
    # A user the model never saw: the most-popular list, and the header says so.
    assert main(["recommend", "123456", "--n", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("# ranked by popularity (ratings per movie): the user has fewer ")
    assert len(out) == 6
    # An id no table can hold is bad input (exit 2), not an OverflowError from the driver.
    assert main(["recommend", "99999999999999999999"]) == 2
    assert "user ids are 64-bit integers" in capsys.readouterr().err


def test_recommend_leaves_out_excluded_movies(trained, store, demo_db):
    trained()
    rec = Recommender(store)
    table = demo_db.read_predictions()
    warm = int(table.loc[table["source"] == "svd", "user_id"].iloc[0])
    for user in (warm, 123_456):  # the blend, and the most-popular fallback
        full = [r.movie_id for r in rec.recommend(user, n=6)]
        got = [r.movie_id for r in rec.recommend(user, n=4, exclude=(full[0], full[2], 99_999))]
        assert got == [full[1], *full[3:6]]


def test_recommend_without_a_model_fails_clearly(recsys_home, capsys):
    assert main(["recommend", "1"]) == 2
    assert "no champion model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def loner():
    return loner_models()


def _loner_store(tmp_path, loner, policy):
    svd, ease, _ = loner
    shipped = strip_svd(svd)
    shipped.ranking_model = ease  # as the pipeline's artifact carries it
    store = ArtifactStore(str(tmp_path / "store"))
    store.save(shipped, {"ranking": policy.as_dict()}, promote=True)
    return Recommender(store, check_interval=0.0)


@pytest.mark.parametrize("ranker", ["ease", "svd"])
@pytest.mark.parametrize("n", [10, 30])  # fewer, and more, than EASE's 25 kept movies
def test_recommend_at_the_cold_start_cut_off_and_without_kept_movies(tmp_path, loner, ranker, n):
    """A user with exactly `min_user_ratings` training ratings gets the shipped list, one
    rating short the most-popular one; `LONER` rated only movies EASE leaves out. Serving
    ranks them as user_predictions does."""
    svd, ease, frame = loner
    factors = SVDFactors.from_svd(svd)
    counts = item_counts(factors.raw_iids, frame["movie_id"].to_numpy())
    users = np.array([1, 2, LONER])
    for cut_off, source in ((4, ranker), (5, "popular")):
        policy = RankingPolicy(1.0, 0.5, 0.1, cut_off, ranker=ranker)
        rec = _loner_store(tmp_path / f"{cut_off}", loner, policy)
        shipped = ShippedModel(factors, counts, policy, ease)
        table = rank_users(shipped, users, (frame["user_id"], frame["movie_id"]), n=n)
        for user, rows in table.groupby("user_id"):
            got = rec.recommend(user, n=n)
            assert [r.movie_id for r in got] == rows["movie_id"].tolist()
            assert [r.source for r in got] == rows["source"].tolist()
        assert set(table.loc[table["user_id"] == LONER, "source"]) == {source}
        got = rec.recommend(LONER, n=n)
        assert len(got) == n and {r.source for r in got} == {source}
