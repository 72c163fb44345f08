"""`StoreReader`: the read side of the artifact store — the champion (recovering from a damaged
pointer), the history, and loads whose bytes are verified before they are unpickled."""

from __future__ import annotations

import io
import os
import pickle
from typing import Self

from recsys_assets.ml.artifacts import history as champions
from recsys_assets.ml.artifacts.files import files_at
from recsys_assets.ml.artifacts.manifest import (
    HISTORY_NAME,
    LATEST_NAME,
    VERSION_RE,
    ArtifactIntegrityError,
    NoModelError,
    checked_version,
    parse_manifest,
    validate_version,
    verify_checksum,
    verify_signature,
    version_of,
)
from recsys_assets.settings import Settings

# Modules renamed since models were first saved: a pickle names the class by its module path,
# so a champion saved before a rename still loads (and can be compared, served, rolled back)
# instead of failing every run until a retrain that its own gates would need it for.
MOVED_MODULES = {"recsys_assets.ml.compact": "recsys_assets.ml.stripped_svd"}


class _ModelUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        return super().find_class(MOVED_MODULES.get(module, module), name)


def loads_model(data: bytes) -> object:
    """Unpickle verified model bytes, following `MOVED_MODULES`; a class that no longer exists
    is an ArtifactIntegrityError saying to retrain."""
    try:
        return _ModelUnpickler(io.BytesIO(data)).load()
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ArtifactIntegrityError(
            f"the model was saved by an incompatible version of recsys_assets ({exc}); "
            "retrain it with `recsys run` (or materialize training_job)"
        ) from exc


class StoreReader:
    """Reading the model versions under one root (a local directory or an fsspec URL): the
    champion, the history, verified loads. `ArtifactStore` adds the writes.

    ``signing_key``: with a key, every saved manifest is signed and every load refuses an
    unsigned or mismatched one before unpickling (``RECSYS_MODEL_SIGNING_KEY``).
    """

    def __init__(self, root: str | os.PathLike, signing_key: bytes | str | None = None) -> None:
        self.files = files_at(root)
        self.root = self.files.root  # a Path for local stores, a UPath otherwise
        key = signing_key.encode() if isinstance(signing_key, str) else signing_key
        self._key: bytes | None = key or None

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> Self:
        """The store at RECSYS_MODEL_STORE (else ``<RECSYS_HOME>/models/surprise``), signing
        key from RECSYS_MODEL_SIGNING_KEY."""
        settings = settings or Settings.from_env()
        return cls(settings.model_store_root, settings.signing_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, signed={self._key is not None})"

    def history(self) -> list[dict]:
        """Champion history, oldest first: ``version, promoted_at, reason, rolled_back_at``
        (and ``salvaged`` for versions a rebuilt history kept). A promotion or rollback that
        never reached latest.json is not in it (``history.py``)."""
        try:
            data = self.files.read(HISTORY_NAME)
        except FileNotFoundError:
            return []
        history = champions.parse_history(data, self.files.describe(HISTORY_NAME))
        if not any(e.get(champions.PENDING) for e in history):
            return history
        return champions.resolve(history, self._pointer_version())

    def _pointer_version(self) -> str | None:
        """latest.json's version; None when it is missing or unreadable."""
        try:
            pointer = self.latest_pointer()
        except (ArtifactIntegrityError, OSError):
            return None
        return pointer.get("version") if pointer else None

    def champion_versions(self) -> set[str]:
        """Every version that was ever champion (kept forever by ``prune``)."""
        return {entry["version"] for entry in self.history()}

    def _with_path(self, manifest: dict) -> dict:
        """Add ``path``: where the pickle is, derived from the *current* root (not stored: the
        store may be moved or mounted elsewhere), so callers can log or link the file."""
        version = manifest.get("version")
        if isinstance(version, str) and VERSION_RE.fullmatch(version):
            return {**manifest, "path": self.files.location(f"{version}.pkl")}
        return manifest

    def _read_manifest(self, name: str) -> dict:
        return parse_manifest(self.files.read(name), self.files.describe(name))

    def latest_pointer(self) -> dict | None:
        """``latest.json`` as stored, or None if nothing has been promoted yet; raises
        ArtifactIntegrityError (or OSError) when it is unreadable."""
        try:
            return self._with_path(self._read_manifest(LATEST_NAME))
        except FileNotFoundError:
            return None

    def latest_manifest(self) -> dict | None:
        """The champion's manifest, recovering from an unusable ``latest.json``; None only
        when nothing was ever promoted.

        ``latest.json`` when it is readable; otherwise (damaged, or missing while the history
        names champions) the newest champion in the history (not rolled back) whose own
        manifest is readable, so the gates, retention and ``models promote/rollback`` keep
        working and can rewrite the pointer. A store that cannot tell its champion raises
        ArtifactIntegrityError (or OSError): never "no champion", which would let a fallback
        overwrite the champion's suggestions and the gates pass as for a first model.
        """
        try:
            pointer = self.latest_pointer()
        except ArtifactIntegrityError as exc:
            problem: Exception | None = exc
        else:
            if pointer is not None:
                return pointer
            problem = None
        try:
            history = self.history()
        except ArtifactIntegrityError as exc:
            raise ArtifactIntegrityError(
                f"cannot tell the champion: {problem or self._missing_pointer()}; and {exc}"
            ) from None
        live = [e for e in history if not e.get("rolled_back_at") and not e.get(champions.SALVAGED)]
        for entry in reversed(live):
            try:
                manifest = self._read_manifest(f"{entry['version']}.json")
            except (ArtifactIntegrityError, FileNotFoundError):
                continue
            if manifest.get("version") == entry["version"]:
                return self._with_path(manifest)
        if problem is None and not live:
            return None  # nothing promoted yet
        raise ArtifactIntegrityError(
            f"cannot tell the champion: {problem or self._missing_pointer()}; and no champion "
            f"in {self.files.describe(HISTORY_NAME)} has a readable manifest"
        )

    def _missing_pointer(self) -> str:
        return f"{self.files.describe(LATEST_NAME)} is missing"

    def scan(self) -> tuple[list[dict], dict[str, str]]:
        """(readable manifests oldest first, {version: problem} for unreadable ones).

        A damaged manifest is reported, never raised: one bad file must not hide the others.
        """
        manifests, problems = [], {}
        for name in sorted(self.files.names()):
            version = version_of(name, ".json")
            if version is None:
                continue
            try:
                manifest = self._read_manifest(name)
            except (ArtifactIntegrityError, OSError) as exc:
                problems[version] = str(exc)
                continue
            if manifest.get("version") != version:
                problems[version] = (
                    f"manifest {self.files.describe(name)} describes version "
                    f"{manifest.get('version')!r}"
                )
                continue
            manifests.append(self._with_path(manifest))
        return sorted(manifests, key=lambda m: m["version"]), problems

    def versions(self) -> list[dict]:
        """Manifests of every readable version, oldest first (``scan`` reports damaged ones)."""
        return self.scan()[0]

    def verify(self, manifest: dict) -> str | None:
        """What is wrong with a saved version (signature, size, SHA-256), or None; never
        unpickles."""
        source = self.files.describe(f"{manifest.get('version')}.json")
        try:
            self._verified_bytes(manifest, source)
        except (ArtifactIntegrityError, OSError) as exc:
            return str(exc)
        return None

    def _verified_bytes(self, manifest: dict, source: object) -> bytes:
        """The pickle's bytes, after its signature, size and SHA-256 checked out."""
        verify_signature(manifest, self._key, source)
        version = checked_version(manifest, source)
        # The name is built from the validated version, never from the manifest's "file".
        pkl = self.files.describe(f"{version}.pkl")
        try:
            data = self.files.read(f"{version}.pkl")
        except FileNotFoundError as exc:
            raise ArtifactIntegrityError(
                f"model file {pkl} referenced by {source} is missing"
            ) from exc
        verify_checksum(manifest, data, source, pkl)
        return data

    def load_version(self, version: str) -> tuple[object, dict]:
        """Load and verify a specific version. Raises ``ValueError`` for a malformed id."""
        validate_version(version)
        name = f"{version}.json"
        try:
            manifest = self._read_manifest(name)
        except FileNotFoundError as exc:
            raise NoModelError(f"model version {version} not found under {self.root}") from exc
        if manifest.get("version") != version:
            raise ArtifactIntegrityError(
                f"manifest {self.files.describe(name)} describes version "
                f"{manifest.get('version')!r}, not {version!r}"
            )
        model = loads_model(self._verified_bytes(manifest, self.files.describe(name)))
        return model, self._with_path(manifest)

    def load_latest(self) -> tuple[object, dict]:
        """Load and verify the promoted (champion) model."""
        manifest = self.latest_pointer()
        if manifest is None:
            raise NoModelError(
                f"no model has been promoted yet under {self.root}; materialize model_artifact "
                "first"
            )
        data = self._verified_bytes(manifest, self.files.describe(LATEST_NAME))
        return loads_model(data), manifest

    def latest_stamp(self) -> object:
        """A value that changes whenever ``latest`` is replaced (serving's reload check);
        NoModelError when nothing is promoted."""
        try:
            return self.files.stamp(LATEST_NAME)
        except FileNotFoundError:
            raise NoModelError(
                f"no champion model under {self.root}; run the pipeline first"
            ) from None
