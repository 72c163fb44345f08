"""The model store on both backends: a local directory and an fsspec URL (`memory://`).

Same store code, same guarantees: versions under unique names, `latest` replaced in one
operation (a failed replace leaves the old pointer and no temp file), verified loads.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import dagster as dg
import fsspec
import pytest

from recsys_assets.ml.artifacts import (
    LATEST_NAME,
    ArtifactIntegrityError,
    ArtifactSignatureError,
    ArtifactStore,
    NoModelError,
)
from recsys_assets.ml.artifacts.files import FsspecFiles, LocalFiles
from recsys_assets.resources.model_store import ModelStore
from recsys_assets.serving import Recommender


@pytest.fixture
def memory_url():
    url = f"memory://recsys-test-{uuid.uuid4().hex}/models"
    yield url
    with contextlib.suppress(FileNotFoundError):
        fsspec.filesystem("memory").rm(url.removeprefix("memory://").split("/")[0], recursive=True)


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path, memory_url) -> str:
    return str(tmp_path / "models") if request.param == "local" else memory_url


def _names(store: ArtifactStore) -> set[str]:
    return set(store.files.names())


def test_backend_is_chosen_by_the_root(tmp_path, memory_url):
    assert isinstance(ArtifactStore(tmp_path).files, LocalFiles)
    assert isinstance(ArtifactStore(f"file://{tmp_path}").files, LocalFiles)
    assert isinstance(ArtifactStore(memory_url).files, FsspecFiles)


def test_round_trip_promote_rollback_prune(root):
    store = ArtifactStore(root)
    with pytest.raises(NoModelError):
        store.load_latest()
    a = store.save({"k": 1}, {"rmse": 0.9})
    b = store.save({"k": 2}, {"rmse": 0.8}, promote=False)
    assert store.load_latest() == ({"k": 1}, a)
    assert a["path"].endswith(f"{a['version']}.pkl") and root.split("://")[-1] in a["path"]
    assert store.load_version(b["version"])[0] == {"k": 2}
    assert [m["version"] for m in store.versions()] == [a["version"], b["version"]]
    assert store.verify(b) is None
    store.promote(b["version"], reason="gates")
    assert store.latest_manifest()["version"] == b["version"]
    old, new = store.rollback()
    assert (old["version"], new["version"]) == (b["version"], a["version"])
    c = store.save({"k": 3}, {}, promote=False)
    # b was champion once: kept; c is among the newest; nothing else to delete.
    assert store.prune(keep_last=1) == []
    assert {a["version"], b["version"], c["version"]} <= {m["version"] for m in store.versions()}
    assert not [n for n in _names(store) if n.endswith(".tmp")]


def test_two_saves_of_the_same_model_in_one_second_get_two_versions(root):
    store = ArtifactStore(root)
    first = store.save({"same": True}, {})
    second = store.save({"same": True}, {})
    assert first["version"] != second["version"]
    assert first["sha256"] == second["sha256"]


def test_failed_pointer_replace_keeps_the_old_champion(root, monkeypatch):
    store = ArtifactStore(root)
    champion = store.save({"k": 1}, {})
    candidate = store.save({"k": 2}, {}, promote=False)

    if isinstance(store.files, FsspecFiles):
        # Break the last step, the move over `latest.json`: the bytes are already written.
        def broken_mv(path1, path2, **kwargs):
            raise OSError(28, "No space left on device", path2)

        monkeypatch.setattr(store.files.fs, "mv", broken_mv)
    else:
        import os

        def broken_replace(src, dst):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.promote(candidate["version"])
    monkeypatch.undo()
    assert store.load_latest()[1]["version"] == champion["version"]
    assert not [n for n in _names(store) if n.endswith(".tmp")], "temp file left behind"


def test_corrupt_pickle_is_refused_before_unpickling(memory_url):
    store = ArtifactStore(memory_url)
    manifest = store.save({"k": 1}, {})
    fs = store.files.fs
    path = f"{store.files.path}/{manifest['file']}"
    fs.pipe_file(path, b"\x00" * manifest["size_bytes"])
    with pytest.raises(ArtifactIntegrityError, match="checksum doesn't match"):
        store.load_latest()
    assert "checksum" in store.verify(manifest)


def test_signed_store_on_memory(memory_url):
    ArtifactStore(memory_url, signing_key="k1").save({"k": 1}, {})
    with pytest.raises(ArtifactSignatureError, match="does not match"):
        ArtifactStore(memory_url, signing_key="k2").load_latest()
    unsigned = ArtifactStore(memory_url).save({"k": 2}, {}, promote=False)
    with pytest.raises(ArtifactSignatureError, match="unsigned"):
        ArtifactStore(memory_url).promote(unsigned["version"])


def test_stale_temp_objects_are_removed_by_prune(memory_url, monkeypatch):
    store = ArtifactStore(memory_url)
    store.save({"k": 1}, {})
    store.files.fs.pipe_file(f"{store.files.path}/.x.pkl.dead.tmp", b"partial")
    assert store.prune(keep_last=5) == [] and ".x.pkl.dead.tmp" in _names(store)  # fresh
    monkeypatch.setattr(store.files, "age_seconds", lambda name: 10 * 24 * 3600.0)
    store.prune(keep_last=5)
    assert ".x.pkl.dead.tmp" not in _names(store)


def test_serving_reloads_after_a_promotion_on_memory(memory_url):
    store = ArtifactStore(memory_url)
    first = store.save({"k": 1}, {})
    stamp = store.latest_stamp()
    second = store.save({"k": 2}, {}, promote=False)
    assert store.latest_stamp() == stamp
    store.promote(second["version"])
    assert store.latest_stamp() != stamp
    assert first["version"] != second["version"]
    with pytest.raises(NoModelError):
        Recommender(ArtifactStore(f"{memory_url}-empty")).version  # noqa: B018


def test_model_store_resource_provides_a_store_on_a_url(memory_url):
    @dg.asset
    def saved(model_store: dg.ResourceParam[ArtifactStore]) -> str:
        assert isinstance(model_store, ArtifactStore)
        return model_store.save({"k": 1}, {})["version"]

    result = dg.materialize([saved], resources={"model_store": ModelStore(root=memory_url)})
    assert result.success
    assert ArtifactStore(memory_url).latest_manifest()["version"] == result.output_for_node("saved")
    assert LATEST_NAME in _names(ArtifactStore(memory_url))


def test_local_store_keeps_its_files_where_it_always_did(tmp_path):
    manifest = ArtifactStore(tmp_path).save({"k": 1}, {})
    assert manifest["path"] == str(Path(tmp_path).absolute() / f"{manifest['version']}.pkl")
    assert {p.name for p in tmp_path.iterdir()} == {
        f"{manifest['version']}.pkl",
        f"{manifest['version']}.json",
        LATEST_NAME,
        "champions.json",
    }


def test_recsys_model_store_names_the_store_everywhere(memory_url, recsys_home, monkeypatch):
    from recsys_assets.definitions import build_resources

    assert ArtifactStore.from_env().root == recsys_home.resolve() / "models" / "surprise"
    monkeypatch.setenv("RECSYS_MODEL_STORE", memory_url)
    assert isinstance(ArtifactStore.from_env().files, FsspecFiles)
    assert build_resources()["model_store"].root == memory_url
