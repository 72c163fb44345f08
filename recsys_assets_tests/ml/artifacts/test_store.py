"""Artifact store: round trips, atomicity under simulated crashes, and refusal of tampered files."""

from __future__ import annotations

import errno
import json
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest

from recsys_assets.ml import artifacts
from recsys_assets.ml.artifacts import (
    VERSION_RE,
    ArtifactIntegrityError,
    ArtifactStore,
    NoModelError,
)


class Evil:
    """Unpickling this creates ``marker``: proof that pickle.loads ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def model_v(k: int) -> dict:
    # Any picklable object is a "model" to the store; distinct content per k.
    return {"kind": "fake-model", "k": k, "weights": np.arange(10, dtype=np.float64) * k}


def files(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()}


def test_round_trip_and_manifest(tmp_path):
    manifest = ArtifactStore(tmp_path).save(model_v(1), {"rmse": np.float64(0.91), "n_ratings": 42})
    version = manifest["version"]
    assert VERSION_RE.fullmatch(version)
    assert manifest["rmse"] == 0.91 and type(manifest["rmse"]) is float
    assert manifest["n_ratings"] == 42
    assert manifest["file"] == f"{version}.pkl"
    assert manifest["size_bytes"] == (tmp_path / f"{version}.pkl").stat().st_size
    assert version.endswith(manifest["sha256"][:8])
    assert manifest["created_at"].endswith("+00:00")
    assert files(tmp_path) == {f"{version}.pkl", f"{version}.json", "latest.json", "champions.json"}

    model, loaded = ArtifactStore(tmp_path).load_latest()
    assert model["k"] == 1
    np.testing.assert_array_equal(model["weights"], model_v(1)["weights"])
    assert loaded == manifest == ArtifactStore(tmp_path).latest_pointer()
    # "path" is derived from the current root on read, never stored (the dir may move).
    assert manifest["path"] == str(tmp_path.absolute() / f"{version}.pkl")
    on_disk = {k: v for k, v in manifest.items() if k != "path"}
    assert json.loads((tmp_path / f"{version}.json").read_text()) == on_disk
    assert json.loads((tmp_path / "latest.json").read_text()) == on_disk

    again, m2 = ArtifactStore(tmp_path).load_version(version)
    assert again["k"] == 1 and m2 == manifest


def test_real_svd_round_trip_predicts_identically(tmp_path):
    import pandas as pd
    from surprise import SVD, Dataset, Reader

    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "user_id": rng.integers(1, 30, 300),
            "movie_id": rng.integers(1, 40, 300),
            "rating": rng.integers(1, 6, 300),
        }
    ).drop_duplicates(["user_id", "movie_id"])
    data = Dataset.load_from_df(df, Reader(rating_scale=(1, 5)))
    svd = SVD(n_factors=4, n_epochs=3, random_state=0).fit(data.build_full_trainset())
    ArtifactStore(tmp_path).save(svd, {"algo": "SVD"})
    loaded, manifest = ArtifactStore(tmp_path).load_latest()
    assert manifest["algo"] == "SVD"
    for u, m in [(1, 1), (5, 7), (999, 3)]:
        assert loaded.predict(u, m).est == svd.predict(u, m).est


def test_versions_listed_and_promote_flag(tmp_path):
    first = ArtifactStore(tmp_path).save(model_v(1), {"note": "first"})
    second = ArtifactStore(tmp_path).save(model_v(2), {"note": "challenger"}, promote=False)
    third = ArtifactStore(tmp_path).save(model_v(3), {"note": "third"}, promote=False)
    listed = ArtifactStore(tmp_path).versions()
    assert [m["version"] for m in listed] == sorted(
        [first["version"], second["version"], third["version"]]
    )
    assert [m["note"] for m in listed] == ["first", "challenger", "third"]  # save order
    # Not promoted: latest still the first model.
    assert ArtifactStore(tmp_path).load_latest()[0]["k"] == 1
    assert ArtifactStore(tmp_path).load_version(second["version"])[0]["k"] == 2

    ArtifactStore(tmp_path).promote(second["version"])
    model, manifest = ArtifactStore(tmp_path).load_latest()
    assert model["k"] == 2 and manifest["note"] == "challenger"
    ArtifactStore(tmp_path).promote(first["version"])  # rollback
    assert ArtifactStore(tmp_path).load_latest()[0]["k"] == 1
    assert "path" not in json.loads((tmp_path / "latest.json").read_text())
    assert ArtifactStore(tmp_path).latest_pointer() == first


def test_same_model_saved_twice_gets_distinct_versions(tmp_path):
    a = ArtifactStore(tmp_path).save(model_v(1), {})
    b = ArtifactStore(tmp_path).save(model_v(1), {})
    assert a["sha256"] == b["sha256"]
    assert a["version"] != b["version"] and a["version"] < b["version"]
    assert len(ArtifactStore(tmp_path).versions()) == 2


def test_no_model_yet(tmp_path):
    assert ArtifactStore(tmp_path).latest_pointer() is None
    assert ArtifactStore(tmp_path / "does-not-exist").versions() == []
    with pytest.raises(NoModelError, match="no model has been promoted yet under .*model_artifact"):
        ArtifactStore(tmp_path).load_latest()
    with pytest.raises(NoModelError, match="not found"):
        ArtifactStore(tmp_path).load_version("20260101T000000Z-00000000")


def test_reserved_manifest_keys_rejected(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        ArtifactStore(tmp_path).save(model_v(1), {"sha256": "forged"})
    assert ArtifactStore(tmp_path).versions() == []


def test_crash_on_latest_pointer_keeps_previous_champion(tmp_path, monkeypatch):
    ArtifactStore(tmp_path).save(model_v(1), {"note": "champion"})
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "latest.json":
            raise OSError(errno.EIO, "simulated crash while publishing latest.json")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="simulated crash"):
        ArtifactStore(tmp_path).save(model_v(2), {"note": "challenger"})
    monkeypatch.undo()

    model, manifest = ArtifactStore(tmp_path).load_latest()
    assert model["k"] == 1 and manifest["note"] == "champion"
    # The new version itself was fully written (just not promoted); no temp debris.
    assert [m["note"] for m in ArtifactStore(tmp_path).versions()] == ["champion", "challenger"]
    assert not [n for n in files(tmp_path) if n.endswith(".tmp")]


class HalfWriter:
    """File object stand-in that writes half the bytes then fails (disk full mid-write)."""

    def __init__(self, real) -> None:
        self.real = real

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.real.close()

    def fileno(self) -> int:
        return self.real.fileno()

    def flush(self) -> None:
        self.real.flush()

    def write(self, data: bytes) -> int:
        self.real.write(data[: len(data) // 2])
        self.real.flush()
        raise OSError(errno.ENOSPC, "simulated disk full mid-write")


@pytest.mark.parametrize("failing_write", [1, 2, 3], ids=["pickle", "manifest", "latest"])
def test_crash_mid_temp_write_leaves_no_partial_files(tmp_path, monkeypatch, failing_write):
    champion = ArtifactStore(tmp_path).save(model_v(1), {"note": "champion"})
    before = {n: (tmp_path / n).read_bytes() for n in files(tmp_path)}
    real_fdopen = os.fdopen
    calls = {"n": 0}
    seen_partial = []

    def fdopen(fd, *args, **kwargs):
        real = real_fdopen(fd, *args, **kwargs)
        calls["n"] += 1  # writes happen in order: pickle, manifest, latest.json
        if calls["n"] != failing_write:
            return real
        # Record that a partial temp file really existed during the write.
        seen_partial.extend(n for n in files(tmp_path) if n.endswith(".tmp"))
        return HalfWriter(real)

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(OSError, match="disk full") as raised:
        ArtifactStore(tmp_path).save(model_v(2), {"note": "challenger"})
    monkeypatch.undo()
    # The error names the file it could not write (a bare ENOSPC names none).
    assert raised.value.filename.startswith(str(tmp_path))

    assert seen_partial, "the temp file should have existed while being written"
    after = files(tmp_path)
    assert not [n for n in after if n.endswith(".tmp")], "temp file not cleaned up"
    # Pre-existing files are byte-for-byte untouched, latest still the champion.
    for name, data in before.items():
        assert (tmp_path / name).read_bytes() == data
    model, manifest = ArtifactStore(tmp_path).load_latest()
    assert model["k"] == 1 and manifest["version"] == champion["version"]
    new = after - set(before)
    # Whatever new files exist are complete, verified artifacts (never partial ones).
    for name in new:
        assert name.endswith((".pkl", ".json"))
    for m in ArtifactStore(tmp_path).versions():
        assert ArtifactStore(tmp_path).load_version(m["version"])[1] == m
    expected_new = {1: 0, 2: 1, 3: 2}[failing_write]
    assert len(new) == expected_new


def test_stray_temp_files_from_a_killed_process_are_ignored(tmp_path):
    ArtifactStore(tmp_path).save(model_v(1), {})
    (tmp_path / ".latest.json.abc123.tmp").write_bytes(b'{"version": "trunc')
    (tmp_path / ".20260101T000000Z-deadbeef.pkl.x.tmp").write_bytes(b"\x80\x05partial")
    assert ArtifactStore(tmp_path).load_latest()[0]["k"] == 1
    assert len(ArtifactStore(tmp_path).versions()) == 1


def test_tampered_pickle_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(Evil(marker), protocol=5)
    pickle.loads(evil)  # sanity: this payload really does create the marker when unpickled
    assert marker.exists()
    marker.unlink()

    root = tmp_path / "models"
    manifest = ArtifactStore(root).save(model_v(1), {})
    pkl = root / manifest["file"]

    pkl.write_bytes(evil)  # swapped file (different size)
    for load in (
        lambda: ArtifactStore(root).load_latest(),
        lambda: ArtifactStore(root).load_version(manifest["version"]),
    ):
        with pytest.raises(ArtifactIntegrityError, match="checksum doesn't match") as exc:
            load()
        assert pkl.name in str(exc.value)
    assert not marker.exists()

    # Same size, one flipped byte: only the SHA-256 catches it.
    good = pickle.dumps(model_v(1), protocol=5)
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    pkl.write_bytes(bytes(flipped))
    with pytest.raises(ArtifactIntegrityError, match=f"{pkl.name}.*SHA-256 checksum doesn't"):
        ArtifactStore(root).load_latest()

    # Evil payload padded to the exact size still fails the hash and is never loaded.
    padded = evil + b"." * (manifest["size_bytes"] - len(evil))
    assert len(padded) == manifest["size_bytes"]
    pkl.write_bytes(padded)
    with pytest.raises(ArtifactIntegrityError, match="checksum doesn't match"):
        ArtifactStore(root).load_latest()
    assert not marker.exists()

    pkl.unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        ArtifactStore(root).load_latest()


@pytest.mark.parametrize(
    "bad",
    [
        "../../etc/passwd",
        "20261127T183012Z-3fa2b1c9/../../x",
        "../20261127T183012Z-3fa2b1c9",
        "20261127T183012Z-3FA2B1C9",
        "20261127T183012Z-3fa2b1c9\n",
        "",
        "latest",
    ],
)
def test_bad_version_strings_rejected(tmp_path, bad):
    ArtifactStore(tmp_path).save(model_v(1), {})
    with pytest.raises(ValueError, match="invalid model version"):
        ArtifactStore(tmp_path).load_version(bad)
    with pytest.raises(ValueError, match="invalid model version"):
        ArtifactStore(tmp_path).promote(bad)


def test_latest_pointing_outside_root_is_refused(tmp_path):
    root = tmp_path / "models"
    manifest = ArtifactStore(root).save(model_v(1), {})
    evil = dict(manifest, version="../outside", file="../outside.pkl")
    (tmp_path / "outside.pkl").write_bytes(pickle.dumps(Evil(tmp_path / "pwned")))
    (root / "latest.json").write_text(json.dumps(evil))
    with pytest.raises(ArtifactIntegrityError, match="invalid model version"):
        ArtifactStore(root).load_latest()
    assert not (tmp_path / "pwned").exists()

    (root / "latest.json").write_text("{not json")
    with pytest.raises(ArtifactIntegrityError, match="not valid JSON"):
        ArtifactStore(root).load_latest()


def test_files_are_0644_regardless_of_umask(tmp_path):
    old = os.umask(0)  # the most permissive umask: mode must still not be world-writable
    try:
        manifest = ArtifactStore(tmp_path).save(model_v(1), {})
    finally:
        os.umask(old)
    for name in (manifest["file"], f"{manifest['version']}.json", "latest.json"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))
        assert not mode & stat.S_IWOTH


def test_atomic_write_bytes_replaces_whole_file(tmp_path):
    target = tmp_path / "f.bin"
    artifacts.atomic_write_bytes(target, b"old contents")
    artifacts.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert files(tmp_path) == {"f.bin"}
