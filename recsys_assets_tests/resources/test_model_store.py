"""ModelStore resource: provides an ArtifactStore, inside Dagster runs too."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from surprise import SVD, Dataset, Reader

from recsys_assets.ml.artifacts import ArtifactIntegrityError, ArtifactStore, NoModelError
from recsys_assets.resources.model_store import ModelStore


@pytest.fixture(scope="module")
def svd() -> SVD:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "user_id": rng.integers(1, 40, 500),
            "movie_id": rng.integers(1, 50, 500),
            "rating": rng.integers(1, 6, 500),
        }
    ).drop_duplicates(["user_id", "movie_id"])
    data = Dataset.load_from_df(df, Reader(rating_scale=(1, 5)))
    return SVD(n_factors=5, n_epochs=3, random_state=0).fit(data.build_full_trainset())


def test_from_env_uses_recsys_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    store = ArtifactStore.from_env()
    assert Path(store.root) == (tmp_path / "home" / "models" / "surprise").resolve()
    assert store.latest_manifest() is None
    assert store.versions() == []
    with pytest.raises(NoModelError, match="materialize model_artifact first"):
        store.load_latest()


def test_save_load_versions(tmp_path, svd):
    store = ModelStore(root=str(tmp_path / "models")).store()
    champion = store.save(svd, {"rmse": 0.9})
    challenger = store.save({"not": "an svd"}, {"rmse": 1.2}, promote=False)

    model, manifest = store.load_latest()
    assert manifest == champion == store.latest_manifest()
    assert model.predict(3, 4).est == svd.predict(3, 4).est
    assert [m["version"] for m in store.versions()] == [champion["version"], challenger["version"]]
    assert store.load_version(challenger["version"])[0] == {"not": "an svd"}

    store.promote(challenger["version"])
    assert store.load_latest()[1]["rmse"] == 1.2
    with pytest.raises(ValueError, match="invalid model version"):
        store.load_version("../../etc/passwd")


def test_corrupt_artifact_surfaces_through_the_resource(tmp_path, svd):
    store = ModelStore(root=str(tmp_path)).store()
    manifest = store.save(svd, {})
    (tmp_path / manifest["file"]).write_bytes(b"\x00" * manifest["size_bytes"])
    with pytest.raises(ArtifactIntegrityError, match="checksum doesn't match"):
        store.load_latest()


def test_resource_inside_a_dagster_run(tmp_path, svd):
    @dg.asset
    def saved(model_store: dg.ResourceParam[ArtifactStore]) -> str:
        return model_store.save(svd, {"source": "asset"})["version"]

    @dg.asset
    def loaded(model_store: dg.ResourceParam[ArtifactStore], saved: str) -> float:
        model, manifest = model_store.load_latest()
        assert manifest["version"] == saved
        return model.predict(1, 2).est

    result = dg.materialize(
        [saved, loaded], resources={"model_store": ModelStore(root=str(tmp_path / "m"))}
    )
    assert result.success
    assert result.output_for_node("loaded") == svd.predict(1, 2).est
    assert len(ArtifactStore(tmp_path / "m").versions()) == 1
