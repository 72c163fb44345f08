"""The pickled model bundle, and artifacts saved before it existed (SVD with EASE attached)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets.ml.model_bundle import ModelBundle, bundle_of
from recsys_assets.ml.ranking import RankingPolicy, rank_users
from recsys_assets.ml.stripped_svd import strip_svd
from recsys_assets.serving import Recommender
from recsys_assets_tests.ml.test_ease import loner_models

POLICY = RankingPolicy(1.0, 0.5, 0.0, min_user_ratings=5, ranker="ease")


@pytest.fixture(scope="module")
def loner():
    return loner_models()


def _old_way(tmp_path, loner, policy=POLICY, with_ease=True) -> ArtifactStore:
    """An artifact as `model_artifact` saved it before bundles: the stripped SVD carrying EASE
    as its `ranking_model` attribute, the policy only in the manifest."""
    svd, ease, _ = loner
    shipped = strip_svd(svd)
    if with_ease:
        shipped.ranking_model = ease
    store = ArtifactStore(str(tmp_path / "old"))
    store.save(shipped, {"ranking": policy.as_dict()}, promote=True)
    return store


def _new_way(tmp_path, loner) -> ArtifactStore:
    svd, ease, _ = loner
    store = ArtifactStore(str(tmp_path / "new"))
    store.save(ModelBundle.of(strip_svd(svd), POLICY, ease), {"ranking": {}}, promote=True)
    return store


def _lists(store: ArtifactStore, frame: pd.DataFrame) -> pd.DataFrame:
    model, manifest = store.load_latest()
    shipped = bundle_of(model, manifest).shipped()
    users = np.unique(frame["user_id"].to_numpy())
    rated = (frame["user_id"].to_numpy(), frame["movie_id"].to_numpy())
    return rank_users(shipped, users, rated, n=10)


def test_an_artifact_saved_the_old_way_loads_as_a_bundle(tmp_path, loner):
    svd, ease, frame = loner
    model, manifest = _old_way(tmp_path, loner).load_latest()
    bundle = bundle_of(model, manifest)
    assert isinstance(bundle, ModelBundle) and bundle.policy == POLICY
    np.testing.assert_array_equal(bundle.ease.weights, ease.weights)
    np.testing.assert_array_equal(bundle.counts, model.trainset.item_counts)
    assert not hasattr(bundle.svd, "ranking_model")
    assert bundle.svd.predict(1, 2).est == svd.predict(1, 2).est
    # The same lists as a bundle saved today, in batch and in serving.
    old, new = _lists(_old_way(tmp_path, loner), frame), _lists(_new_way(tmp_path, loner), frame)
    assert set(old["source"]) == {"ease", "popular"}
    pd.testing.assert_frame_equal(old, new)
    old_rec = Recommender(_old_way(tmp_path, loner), check_interval=0.0)
    new_rec = Recommender(_new_way(tmp_path, loner), check_interval=0.0)
    for user in (1, 5, 17, 999, 123_456):
        assert old_rec.recommend(user, n=10) == new_rec.recommend(user, n=10)


def test_an_old_artifact_without_its_ease_model_is_refused(tmp_path, loner):
    model, manifest = _old_way(tmp_path, loner, with_ease=False).load_latest()
    with pytest.raises(ValueError, match="ranks with EASE but its artifact carries no EASE"):
        bundle_of(model, manifest)
    # A blend policy needs no EASE model; one attached is not kept.
    blend = RankingPolicy(1.0, 0.5, 0.0, min_user_ratings=5)
    model, manifest = _old_way(tmp_path, loner, policy=blend).load_latest()
    assert bundle_of(model, manifest).ease is None


def test_an_artifact_that_holds_no_model_is_named(tmp_path):
    with pytest.raises(ValueError, match="holds a dict, not a fitted model"):
        bundle_of({"m": 1}, {})
