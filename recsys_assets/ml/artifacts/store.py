"""`ArtifactStore`: versioned, atomic, checksum-verified (optionally signed) model artifacts."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import pickle

from recsys_assets.ml.artifacts import history as champions
from recsys_assets.ml.artifacts.manifest import (
    HISTORY_NAME,
    LATEST_NAME,
    RESERVED_KEYS,
    SIGNATURE_KEY,
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactSignatureError,
    NoModelError,
    dump_json,
    format_version,
    sign_manifest,
    version_of,
    version_time,
)
from recsys_assets.ml.artifacts.reader import StoreReader

PICKLE_PROTOCOL = 5
# Versions `prune` keeps by default (model_artifact's retention and `recsys models prune`).
DEFAULT_KEEP_VERSIONS = 10
_MAX_VERSION_CLASHES = 100
# A pickle without its manifest (a write killed between the two) older than this is removed.
ORPHAN_SECONDS = 3600


class ArtifactStore(StoreReader):
    """The model versions under one root: a local directory or an fsspec URL.

    ``signing_key``: with a key, every saved manifest is signed and every load refuses an
    unsigned or mismatched one before unpickling (``RECSYS_MODEL_SIGNING_KEY``).
    """

    def __init__(self, root: str | os.PathLike, signing_key: bytes | str | None = None) -> None:
        super().__init__(root, signing_key)
        # What promote/rollback repaired on the way (a damaged champions.json), for callers
        # to report.
        self.repairs: list[str] = []

    # ------------------------------------------------------------------------- writes

    def save(self, model: object, manifest: dict, promote: bool = True) -> dict:
        """Pickle ``model`` into a new version; optionally make it ``latest``.

        Write order is pickle, then its manifest, then ``latest.json``: a crash at any point
        leaves ``latest`` pointing at a complete, verified version (old or new). Returns the
        full manifest (caller's fields plus version, created_at, sha256, size_bytes, file,
        and the derived, unstored ``path``).
        """
        clash = RESERVED_KEYS.intersection(manifest)
        if clash:
            raise ValueError(f"manifest keys {sorted(clash)} are set by the store itself")
        self.files.makedirs()
        data = pickle.dumps(model, protocol=PICKLE_PROTOCOL)
        sha256 = hashlib.sha256(data).hexdigest()
        now = dt.datetime.now(dt.UTC)
        json.loads(dump_json({**manifest, "sha256": sha256}))  # a bad manifest writes nothing
        when = self._next_version_time(now)
        # The pickle is published under a name no other writer can take at the same moment:
        # two runs in the same second on the same data get distinct versions.
        for _ in range(_MAX_VERSION_CLASHES):
            version = format_version(when, sha256)
            try:
                self.files.create(f"{version}.pkl", data)
                break
            except FileExistsError:
                when = max(when, self._next_version_time(now)) + dt.timedelta(seconds=1)
        else:
            raise ArtifactError(f"could not find a free version name under {self.root}")
        full = dict(manifest)
        full.update(
            version=version,
            created_at=now.isoformat(),
            sha256=sha256,
            size_bytes=len(data),
            file=f"{version}.pkl",
        )
        # Round-trip through JSON first so the signature covers exactly what is stored.
        full = json.loads(dump_json(full))
        if self._key is not None:
            full[SIGNATURE_KEY] = sign_manifest(full, self._key)
        manifest_bytes = dump_json(full)
        self.files.write(f"{version}.json", manifest_bytes)
        if promote:
            self.promote(version, "saved with promote=True")
        # What is stored (numpy scalars -> plain JSON types), as later reads hand it back.
        return self._with_path(json.loads(manifest_bytes))

    def _next_version_time(self, now: dt.datetime) -> dt.datetime:
        """``now`` to the second, bumped past the newest existing version if needed.

        Two saves within one second would otherwise collide (same model) or sort by hash
        rather than by save order (different models); strictly increasing timestamps keep
        versions unique and in save order. Saves into one root are assumed to be serialized
        (one Dagster materialization at a time); this is not a cross-process lock.
        """
        when = now.replace(microsecond=0)
        for name in self.files.names():
            version = version_of(name, ".pkl") or version_of(name, ".json")
            stamp = version_time(version) if version else None
            if stamp is not None and when <= stamp:
                when = stamp + dt.timedelta(seconds=1)
        return when

    def promote(self, version: str, reason: str = "manual") -> dict:
        """Point ``latest`` at an existing ``version`` after verifying it; record it as
        champion. All or nothing (see ``history.py``): the history is read, and repaired if
        damaged, before anything is written, and ``latest.json`` is the commit point."""
        _, manifest = self.load_version(version)  # refuses bad versions
        history = self._history_for_write()
        self._refuse_unsigned_over_signed(manifest)
        record = champions.entry(version, reason)
        self._commit(history + [{**record, champions.PENDING: True}], manifest, history + [record])
        return manifest

    def rollback(self) -> tuple[dict, dict]:
        """Make the previous champion ``latest`` again; returns (old, new) manifests.

        The current champion's history entry is marked rolled back, so a second rollback goes
        one further back rather than flipping between two versions.
        """
        current = self.latest_manifest()
        if current is None:
            raise NoModelError(f"no champion under {self.root}; nothing to roll back")
        history = self._history_for_write()
        live = [i for i, e in enumerate(history) if not e.get("rolled_back_at")]
        # The current champion's newest live entry, then the newest live entry before it with
        # a different version: the champion it replaced. Salvaged entries (from a damaged
        # history) are no known champion and never a target.
        mine = [i for i in live if history[i]["version"] == current["version"]]
        cut = mine[-1] if mine else len(history)
        previous = [
            i
            for i in live
            if i < cut
            and history[i]["version"] != current["version"]
            and not history[i].get(champions.SALVAGED)
        ]
        if not previous:
            raise NoModelError(
                f"{current['version']} has no previous champion to roll back to under {self.root}"
                "; promote a version by hand (`recsys models promote VERSION`)"
            )
        _, manifest = self.load_version(history[previous[-1]]["version"])  # verify first
        self._refuse_unsigned_over_signed(manifest)
        now = champions.now_iso()
        marked = [dict(e) for e in history]
        for i in mine:
            marked[i].update(rolled_back_at=now)
        intent = [{**e, champions.PENDING: True} if i in mine else e for i, e in enumerate(marked)]
        self._commit(intent, manifest, marked)
        return current, manifest

    def _commit(self, intent: list[dict], manifest: dict, done: list[dict]) -> None:
        """History with the change pending, then latest.json (the commit), then the history
        without the mark. A failed pointer write takes the intent back (readers would ignore
        it anyway); a failed last write changes nothing readers see."""
        before = self.files.read(HISTORY_NAME) if self.files.has(HISTORY_NAME) else None
        self.files.write(HISTORY_NAME, dump_json(intent))
        try:
            self.files.write(LATEST_NAME, dump_json(_stored(manifest)))
        except BaseException:
            with contextlib.suppress(Exception):
                if before is None:
                    self.files.delete(HISTORY_NAME)
                else:
                    self.files.write(HISTORY_NAME, before)
            raise
        # Committed: a failure to tidy the mark (e.g. a full disk) is settled by every read.
        with contextlib.suppress(OSError):
            self.files.write(HISTORY_NAME, dump_json(done))

    def _refuse_unsigned_over_signed(self, manifest: dict) -> None:
        """Signing is sticky: the serving side, which has the key, would refuse an unsigned
        model and keep no model at all."""
        try:
            champion = self.latest_manifest()
        except ArtifactIntegrityError:
            # Neither latest.json nor the history can name the champion: promoting a version
            # by hand is how such a store is repaired (with a key, loads refuse unsigned ones).
            champion = None
        if champion is not None and SIGNATURE_KEY in champion and SIGNATURE_KEY not in manifest:
            raise ArtifactSignatureError(
                f"refusing to promote unsigned model {manifest.get('version')}: the champion "
                f"{champion.get('version')} is signed. Set RECSYS_MODEL_SIGNING_KEY where "
                "training runs (see the README on key rotation) and train again"
            )

    def _history_for_write(self) -> list[dict]:
        """The settled history, or a rebuilt one if champions.json is damaged (the damaged
        bytes kept beside it and the repair recorded in ``repairs``)."""
        try:
            return self.history()
        except ArtifactIntegrityError as exc:
            problem = str(exc)
            damaged = self.files.read(HISTORY_NAME)
        copy_name = champions.damaged_copy_name()
        self.files.write(copy_name, damaged)
        pointer = self._pointer_version()
        known = {v for v in (version_of(n, ".json") for n in self.files.names()) if v}
        rebuilt = champions.rebuild(damaged, copy_name, pointer, known)
        self.repairs.append(
            f"{problem}; kept it as {self.files.describe(copy_name)} and rebuilt the history "
            f"(champion {pointer or 'none'} per latest.json"
            + (f", {len(rebuilt) - bool(pointer)} earlier versions it names" if rebuilt else "")
            + ")"
        )
        return rebuilt

    def prune(self, keep_last: int = DEFAULT_KEEP_VERSIONS) -> list[str]:
        """Delete versions that are neither among the newest ``keep_last`` nor ever champion
        (and temp files of killed writes). Returns the deleted versions; ``latest`` is kept."""
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        if not self.files.exists():
            return []
        self.files.clean_temp()
        names = self.files.names()
        # By file name, not manifest content: an unreadable manifest never blocks retention.
        versions = sorted(v for v in (version_of(n, ".json") for n in names) if v)
        try:
            keep = set(versions[-keep_last:]) | self.champion_versions()
        except ArtifactIntegrityError:
            return []  # without the history we cannot tell past champions apart: delete nothing
        latest = self.latest_manifest()
        if latest is not None:
            keep.add(latest["version"])
        deleted = []
        for orphan in self._orphan_pickles(names):
            if orphan not in keep:
                self.files.delete(f"{orphan}.pkl")
                deleted.append(orphan)
        for version in versions:
            if version in keep:
                continue
            # Manifest first: a version without its manifest is invisible, never half-loadable.
            self.files.delete(f"{version}.json")
            self.files.delete(f"{version}.pkl")
            deleted.append(version)
        if deleted:
            self.files.deleted()
        return deleted

    def _orphan_pickles(self, names: list[str]) -> list[str]:
        """Versions with a pickle but no manifest, older than ORPHAN_SECONDS (a killed save)."""
        present = set(names)
        orphans = []
        for version in (version_of(n, ".pkl") for n in names):
            if version is None or f"{version}.json" in present:
                continue
            try:
                if self.files.age_seconds(f"{version}.pkl") > ORPHAN_SECONDS:
                    orphans.append(version)
            except FileNotFoundError:
                continue
        return sorted(orphans)


def _stored(manifest: dict) -> dict:
    """A manifest as latest.json stores it (``path`` is derived on read, never stored)."""
    return {k: v for k, v in manifest.items() if k != "path"}
