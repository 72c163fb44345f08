"""The model store survives its own damage: bad manifests, a corrupt latest.json, truncated
pickles, killed writes, two writers at once, an unsigned candidate over a signed champion."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import time

import pytest

from recsys_assets.ml import artifacts
from recsys_assets.ml.artifacts import (
    ArtifactIntegrityError,
    ArtifactSignatureError,
    ArtifactStore,
    clean_stale_temp_files,
)
from recsys_assets_tests.ml.artifacts.versions import KEY, save_version


def _save(root, k, promote_it=False, key=None):
    return save_version(root, k, promote_it, key)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_unreadable_old_manifest_is_reported_and_skipped_everywhere(tmp_path):
    old = _save(tmp_path, 1)
    champion = _save(tmp_path, 2, promote_it=True)
    (tmp_path / f"{old['version']}.json").write_text("{not json")

    versions, problems = ArtifactStore(tmp_path).scan()
    assert [m["version"] for m in versions] == [champion["version"]]
    assert "not valid JSON" in problems[old["version"]]
    assert [m["version"] for m in ArtifactStore(tmp_path).versions()] == [champion["version"]]

    # Saving, pruning and promoting go on; retention still sees the damaged version by name.
    newer = _save(tmp_path, 3)
    assert ArtifactStore(tmp_path).prune(keep_last=2) == [old["version"]]
    assert not (tmp_path / f"{old['version']}.pkl").exists()
    ArtifactStore(tmp_path).promote(newer["version"])
    assert ArtifactStore(tmp_path).load_latest()[1]["version"] == newer["version"]


def test_corrupt_latest_json_recovers_from_the_history(tmp_path):
    a = _save(tmp_path, 1, promote_it=True)
    b = _save(tmp_path, 2, promote_it=True)
    (tmp_path / "latest.json").write_text("{")
    with pytest.raises(ArtifactIntegrityError, match="latest.json"):
        ArtifactStore(tmp_path).load_latest()  # serving refuses; it never guesses
    assert ArtifactStore(tmp_path).latest_manifest()["version"] == b["version"]
    # The documented recovery: rollback (from the history) or promote rewrites the pointer.
    old, new = ArtifactStore(tmp_path).rollback()
    assert (old["version"], new["version"]) == (b["version"], a["version"])
    assert ArtifactStore(tmp_path).load_latest()[1]["version"] == a["version"]
    (tmp_path / "latest.json").write_text("[]")
    ArtifactStore(tmp_path).promote(b["version"])
    assert ArtifactStore(tmp_path).load_latest()[1]["version"] == b["version"]


def test_verify_version_names_a_truncated_pickle_without_unpickling(tmp_path):
    m = _save(tmp_path, 1)
    assert ArtifactStore(tmp_path).verify(m) is None
    pkl = tmp_path / f"{m['version']}.pkl"
    pkl.write_bytes(pkl.read_bytes()[:10])
    assert "size 10 does not match" in ArtifactStore(tmp_path).verify(m)
    signed = _save(tmp_path, 2, key=KEY)
    assert ArtifactStore(tmp_path, KEY).verify(signed) is None
    assert "not signed" in ArtifactStore(tmp_path, KEY).verify(m | {"size_bytes": 10})


def test_signature_covers_sha256_and_size(tmp_path):
    """A swapped pickle with a rewritten checksum and size is refused under a key."""
    m = _save(tmp_path, 1, key=KEY)
    swapped = pickle.dumps({"k": "evil"}, protocol=5)
    (tmp_path / f"{m['version']}.pkl").write_bytes(swapped)
    manifest_path = tmp_path / f"{m['version']}.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(sha256=hashlib.sha256(swapped).hexdigest(), size_bytes=len(swapped))
    manifest_path.write_text(json.dumps(manifest))  # old signature kept
    with pytest.raises(ArtifactSignatureError, match="does not match"):
        ArtifactStore(tmp_path, KEY).load_version(m["version"])
    # Without a key only the checksum guards, and the rewritten one matches: what the key is for.
    assert ArtifactStore(tmp_path).load_version(m["version"])[0] == {"k": "evil"}


def test_rollback_marks_the_rolled_back_champion(tmp_path):
    """Promote A, B, C; roll back (to B); promote D; roll back: B again, never C."""
    a, b, c, d = (_save(tmp_path, k) for k in range(4))
    for m in (a, b, c):
        ArtifactStore(tmp_path).promote(m["version"])
    assert ArtifactStore(tmp_path).rollback()[1]["version"] == b["version"]
    ArtifactStore(tmp_path).promote(d["version"])
    assert ArtifactStore(tmp_path).rollback()[1]["version"] == b["version"]
    assert ArtifactStore(tmp_path).rollback()[1]["version"] == a["version"]
    rolled = [e["version"] for e in ArtifactStore(tmp_path).history() if e["rolled_back_at"]]
    assert c["version"] in rolled and d["version"] in rolled


def test_unsigned_candidate_is_not_promoted_over_a_signed_champion(tmp_path):
    signed = _save(tmp_path, 1, key=KEY)
    ArtifactStore(tmp_path, KEY).promote(signed["version"])
    unsigned = _save(tmp_path, 2)
    with pytest.raises(ArtifactSignatureError, match="champion .* is signed"):
        ArtifactStore(tmp_path).promote(unsigned["version"])
    assert ArtifactStore(tmp_path, KEY).load_latest()[1]["version"] == signed["version"]
    # A signed candidate is fine, with or without the key at promotion time.
    ArtifactStore(tmp_path).promote(_save(tmp_path, 3, key=KEY)["version"])


def test_rollback_never_returns_to_an_unsigned_model_from_a_signed_one(tmp_path):
    unsigned = _save(tmp_path, 1, promote_it=True)
    signed = _save(tmp_path, 2, key=KEY)
    ArtifactStore(tmp_path).promote(
        signed["version"]
    )  # signing starts: fine over an unsigned champion
    with pytest.raises(ArtifactSignatureError, match=unsigned["version"]):
        ArtifactStore(tmp_path).rollback()
    assert ArtifactStore(tmp_path).latest_manifest()["version"] == signed["version"]


def test_same_second_same_data_gets_distinct_versions_across_processes(tmp_path, monkeypatch):
    # Both writers computed the same name (same second, same bytes): the second one to
    # publish must not overwrite the first.
    first = _save(tmp_path, 1)
    stamp = first["version"].split("-")[0]
    import datetime as dt

    fixed = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    monkeypatch.setattr(ArtifactStore, "_next_version_time", lambda self, now: fixed)
    second = _save(tmp_path, 1)
    assert second["version"] != first["version"]
    assert second["sha256"] == first["sha256"]
    assert ArtifactStore(tmp_path).load_version(first["version"])[1]["version"] == first["version"]


def _save_at_barrier(root, barrier, queue):
    barrier.wait()
    queue.put(_save(root, 7)["version"])


def test_concurrent_saves_of_the_same_model_never_collide(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_save_at_barrier, args=(tmp_path, barrier, queue)) for _ in "abcd"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    versions = [queue.get(timeout=5) for _ in procs]
    assert len(set(versions)) == 4
    assert all(ArtifactStore(tmp_path).load_version(v)[0] == {"k": 7} for v in versions)


def test_temp_files_of_dead_writers_are_cleaned_live_ones_kept(tmp_path):
    _save(tmp_path, 1)
    dead = tmp_path / f".x.pkl.{_dead_pid()}.abcdefgh.tmp"
    mine = tmp_path / f".y.pkl.{os.getpid()}.abcdefgh.tmp"
    old = tmp_path / ".z.pkl.zz9.tmp"  # an older name format: only its age counts
    for path in (dead, mine, old):
        path.write_bytes(b"partial")
    day_ago = time.time() - artifacts.STALE_TEMP_SECONDS - 60
    os.utime(old, (day_ago, day_ago))
    assert set(clean_stale_temp_files(tmp_path)) == {dead, old}
    assert mine.exists()
    ArtifactStore(tmp_path).prune(keep_last=5)  # retention cleans them too
    assert mine.exists()


def test_orphan_pickle_of_a_killed_save_is_pruned_when_old(tmp_path):
    m = _save(tmp_path, 1)
    (tmp_path / f"{m['version']}.json").unlink()  # killed between pickle and manifest
    assert ArtifactStore(tmp_path).prune(keep_last=1) == []  # recent: may be a save in progress
    old = time.time() - artifacts.ORPHAN_SECONDS - 60
    os.utime(tmp_path / f"{m['version']}.pkl", (old, old))
    assert ArtifactStore(tmp_path).prune(keep_last=1) == [m["version"]]
    assert not any(tmp_path.iterdir())
