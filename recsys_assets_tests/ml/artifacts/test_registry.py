"""Signed manifests, champion history, rollback and retention in the artifact store."""

from __future__ import annotations

import json
import stat

import pytest

from recsys_assets.ml.artifacts import (
    ArtifactIntegrityError,
    ArtifactSignatureError,
    ArtifactStore,
    NoModelError,
)
from recsys_assets_tests.ml.artifacts.versions import KEY, save_version


def _save(root, k, promote_it=True, key=None):
    return save_version(root, k, promote_it, key)


def test_signed_round_trip(tmp_path):
    manifest = _save(tmp_path, 1, key=KEY)
    assert len(manifest["signature"]) == 64
    model, loaded = ArtifactStore(tmp_path, KEY).load_latest()
    assert model == {"k": 1} and loaded["signature"] == manifest["signature"]
    ArtifactStore(tmp_path, KEY).load_version(manifest["version"])


def test_unsigned_model_refused_when_a_key_is_configured(tmp_path):
    manifest = _save(tmp_path, 1)  # saved without a key
    with pytest.raises(ArtifactSignatureError, match="not signed"):
        ArtifactStore(tmp_path, KEY).load_latest()
    with pytest.raises(ArtifactSignatureError, match="not signed"):
        ArtifactStore(tmp_path, KEY).promote(manifest["version"])
    ArtifactStore(tmp_path).load_latest()  # without a key the checksum alone is checked


def test_tampered_or_foreign_signature_refused(tmp_path):
    manifest = _save(tmp_path, 1, key=KEY)
    with pytest.raises(ArtifactSignatureError, match="does not match"):
        ArtifactStore(tmp_path, b"another key").load_latest()
    # Rewriting a manifest field (here: the metrics the gates read) breaks the signature,
    # even though the pickle and its checksum are untouched.
    for name in ("latest.json", f"{manifest['version']}.json"):
        path = tmp_path / name
        data = json.loads(path.read_text())
        data["cv_metrics"]["rmse_mean"] = 0.1
        path.write_text(json.dumps(data))
    with pytest.raises(ArtifactSignatureError, match="does not match"):
        ArtifactStore(tmp_path, KEY).load_latest()
    with pytest.raises(ArtifactSignatureError):
        ArtifactStore(tmp_path, KEY).load_version(manifest["version"])


def test_tampered_pickle_refused_before_unpickling(tmp_path):
    manifest = _save(tmp_path, 1, key=KEY)
    pkl = tmp_path / f"{manifest['version']}.pkl"
    data = bytearray(pkl.read_bytes())
    data[-2] ^= 0xFF
    pkl.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="checksum"):
        ArtifactStore(tmp_path, KEY).load_latest()


def test_artifact_files_are_not_world_writable(tmp_path):
    _save(tmp_path, 1, key=KEY)
    for path in tmp_path.iterdir():
        assert not path.stat().st_mode & stat.S_IWOTH, path
        assert not path.stat().st_mode & stat.S_IWGRP, path


def test_candidates_do_not_move_latest_and_rollback_is_a_stack(tmp_path):
    a = _save(tmp_path, 1)
    b = _save(tmp_path, 2, promote_it=False)
    assert ArtifactStore(tmp_path).latest_pointer()["version"] == a["version"]
    ArtifactStore(tmp_path).promote(b["version"], reason="gates")
    c = _save(tmp_path, 3, promote_it=False)
    ArtifactStore(tmp_path).promote(c["version"], reason="gates")
    assert [e["version"] for e in ArtifactStore(tmp_path).history()] == [
        a["version"],
        b["version"],
        c["version"],
    ]

    old, new = ArtifactStore(tmp_path).rollback()
    assert (old["version"], new["version"]) == (c["version"], b["version"])
    assert ArtifactStore(tmp_path).latest_pointer()["version"] == b["version"]
    _, new = ArtifactStore(tmp_path).rollback()  # one further back, not back to c
    assert new["version"] == a["version"]
    with pytest.raises(NoModelError, match="no previous champion"):
        ArtifactStore(tmp_path).rollback()
    assert ArtifactStore(tmp_path).load_latest()[0] == {"k": 1}


def test_rollback_without_champion(tmp_path):
    with pytest.raises(NoModelError, match="nothing to roll back"):
        ArtifactStore(tmp_path).rollback()


def test_prune_keeps_newest_and_every_champion(tmp_path):
    first = _save(tmp_path, 1)  # champion
    candidates = [_save(tmp_path, k, promote_it=False) for k in range(2, 7)]
    deleted = ArtifactStore(tmp_path).prune(keep_last=2)
    kept = [m["version"] for m in ArtifactStore(tmp_path).versions()]
    assert kept == [first["version"], *(c["version"] for c in candidates[-2:])]
    assert deleted == [c["version"] for c in candidates[:3]]
    assert not (tmp_path / f"{candidates[0]['version']}.pkl").exists()
    with pytest.raises(ValueError):
        ArtifactStore(tmp_path).prune(keep_last=0)
