"""The model store survives its own damage: bad manifests, a corrupt latest.json, truncated
pickles, killed writes, two writers at once, an unsigned candidate over a signed champion."""

from __future__ import annotations

import errno
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
    NoModelError,
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


# --- promotion all or nothing: latest.json, champions.json and what they say agree ----------


def _champion_per_history(root) -> str | None:
    live = [e for e in ArtifactStore(root).history() if not e.get("rolled_back_at")]
    return live[-1]["version"] if live else None


def _assert_agree(root, expected: str) -> None:
    """The pointer, the history and serving name the same champion; no temp debris."""
    store = ArtifactStore(root)
    assert store.load_latest()[1]["version"] == expected
    assert store.latest_manifest()["version"] == expected
    assert _champion_per_history(root) == expected
    assert not list(root.glob(".*.tmp"))


def test_a_damaged_history_is_kept_aside_rebuilt_and_promotion_goes_through(tmp_path):
    a = _save(tmp_path, 1, promote_it=True)
    b = _save(tmp_path, 2, promote_it=True)
    c = _save(tmp_path, 3)
    history = tmp_path / "champions.json"
    damaged = history.read_bytes()[: len(history.read_bytes()) // 2 + 40]  # names a, not b
    assert a["version"].encode() in damaged and b["version"].encode() not in damaged
    history.write_bytes(damaged)

    store = ArtifactStore(tmp_path)
    store.promote(c["version"], reason="test")
    _assert_agree(tmp_path, c["version"])
    assert len(store.repairs) == 1 and "champions.json" in store.repairs[0]
    (copy,) = tmp_path.glob("champions.json.damaged-*")
    assert copy.read_bytes() == damaged
    entries = {e["version"]: e for e in ArtifactStore(tmp_path).history()}
    assert entries[a["version"]]["salvaged"] is True  # kept by retention, no rollback target
    assert ArtifactStore(tmp_path).champion_versions() == {a["version"], b["version"], c["version"]}
    assert ArtifactStore(tmp_path).prune(keep_last=1) == []
    # Rollback: back to b (latest.json's champion at the rebuild), then no further.
    assert ArtifactStore(tmp_path).rollback()[1]["version"] == b["version"]
    _assert_agree(tmp_path, b["version"])
    with pytest.raises(NoModelError, match="no previous champion"):
        ArtifactStore(tmp_path).rollback()


def test_garbage_history_then_rollback_repairs_it_and_says_why_it_cannot_go_back(tmp_path):
    _save(tmp_path, 1, promote_it=True)
    b = _save(tmp_path, 2, promote_it=True)
    (tmp_path / "champions.json").write_text("{garbage")
    # The pointer is intact: the champion is still known, not "none".
    assert ArtifactStore(tmp_path).latest_manifest()["version"] == b["version"]
    with pytest.raises(NoModelError, match="no previous champion"):
        ArtifactStore(tmp_path).rollback()
    assert ArtifactStore(tmp_path).latest_pointer()["version"] == b["version"]


def _fail_write_of(monkeypatch, name: str, nth: int = 1) -> None:
    """The nth publish (os.replace) of ``name`` fails as a full disk would."""
    real_replace, seen = os.replace, {"n": 0}

    def replace(src, dst):
        if os.path.basename(dst) == name:
            seen["n"] += 1
            if seen["n"] == nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("name", ["champions.json", "latest.json"])
def test_a_failed_history_or_pointer_write_leaves_the_old_champion_everywhere(
    tmp_path, monkeypatch, name
):
    a = _save(tmp_path, 1, promote_it=True)
    b = _save(tmp_path, 2)
    before = (tmp_path / "champions.json").read_bytes()
    _fail_write_of(monkeypatch, name)
    with pytest.raises(OSError, match="No space left on device") as raised:
        ArtifactStore(tmp_path).promote(b["version"])
    monkeypatch.undo()
    assert raised.value.filename == str(tmp_path / name)
    _assert_agree(tmp_path, a["version"])
    assert (tmp_path / "champions.json").read_bytes() == before
    assert ArtifactStore(tmp_path).champion_versions() == {a["version"]}


def test_a_failed_pointer_write_in_a_rollback_changes_nothing(tmp_path, monkeypatch):
    _save(tmp_path, 1, promote_it=True)
    b = _save(tmp_path, 2, promote_it=True)
    _fail_write_of(monkeypatch, "latest.json")
    with pytest.raises(OSError, match="No space left"):
        ArtifactStore(tmp_path).rollback()
    monkeypatch.undo()
    _assert_agree(tmp_path, b["version"])
    assert not any(e["rolled_back_at"] for e in ArtifactStore(tmp_path).history())


def test_a_promotion_whose_last_tidying_write_fails_is_complete(tmp_path, monkeypatch):
    _save(tmp_path, 1, promote_it=True)
    b = _save(tmp_path, 2)
    _fail_write_of(monkeypatch, "champions.json", nth=2)  # the intent went through
    ArtifactStore(tmp_path).promote(b["version"])
    monkeypatch.undo()
    assert '"pending": true' in (tmp_path / "champions.json").read_text()
    _assert_agree(tmp_path, b["version"])
    assert "pending" not in ArtifactStore(tmp_path).history()[-1]


KILL_AT_WRITE = """
import os, signal, sys
from recsys_assets.ml.artifacts import ArtifactStore
name, nth, root, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
real, seen = os.replace, [0]
def replace(src, dst):
    if os.path.basename(dst) == name:
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)  # as kill -9 just before this write
    return real(src, dst)
os.replace = replace
ArtifactStore(root).promote(version)
"""


@pytest.mark.parametrize(
    ("name", "nth", "promoted"),
    [("champions.json", 1, False), ("latest.json", 1, False), ("champions.json", 2, True)],
    ids=["before-history", "before-pointer", "before-tidying"],
)
def test_a_promotion_killed_at_any_write_leaves_one_champion(tmp_path, name, nth, promoted):
    a = _save(tmp_path, 1, promote_it=True)
    b = _save(tmp_path, 2)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT_WRITE, name, str(nth), str(tmp_path), b["version"]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr
    ArtifactStore(tmp_path).prune(keep_last=10)  # as model_artifact does: the dead temp file
    champion = b if promoted else a
    _assert_agree(tmp_path, champion["version"])
    assert (b["version"] in ArtifactStore(tmp_path).champion_versions()) is promoted
    # The next promotion and a rollback work from that state.
    c = _save(tmp_path, 3)
    ArtifactStore(tmp_path).promote(c["version"])
    assert ArtifactStore(tmp_path).rollback()[1]["version"] == champion["version"]
    _assert_agree(tmp_path, champion["version"])


def test_a_store_that_cannot_be_read_is_never_no_champion(tmp_path):
    assert ArtifactStore(tmp_path).latest_manifest() is None  # empty: nothing promoted
    a = _save(tmp_path, 1, promote_it=True)
    (tmp_path / "latest.json").unlink()
    # A lost pointer with a history: the history's champion, not "none".
    assert ArtifactStore(tmp_path).latest_manifest()["version"] == a["version"]
    (tmp_path / "champions.json").write_text("{garbage")
    with pytest.raises(ArtifactIntegrityError, match="cannot tell the champion.*champions.json"):
        ArtifactStore(tmp_path).latest_manifest()
    (tmp_path / "latest.json").write_text("{")
    with pytest.raises(ArtifactIntegrityError, match="latest.json.*champions.json"):
        ArtifactStore(tmp_path).latest_manifest()
    (tmp_path / "champions.json").write_text("[]")
    with pytest.raises(ArtifactIntegrityError, match="no champion in"):
        ArtifactStore(tmp_path).latest_manifest()
