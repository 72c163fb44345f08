"""Versioned, atomic, checksum-verified model artifacts on the local filesystem.

Layout under ``root`` (e.g. ``<RECSYS_HOME>/models/surprise/``)::

    20261127T183012Z-3fa2b1c9.pkl   pickled model (protocol 5)
    20261127T183012Z-3fa2b1c9.json  manifest: caller's fields + version/created_at/sha256/...
    latest.json                     the pointer: a copy of the champion's manifest

Why: the old system exported models non-atomically (a crash mid-write left a truncated
file that the web tier then failed on) and ``pickle.load``-ed whatever file sat at the
path. Here every write is write-temp + fsync + ``os.replace`` + directory fsync, and every
load checks size and SHA-256 against the manifest *before* unpickling.

The checksum guards against corruption and against a swapped/tampered pickle; it is not a
signature (someone who can rewrite both the pickle and the manifest can still run code
through ``pickle``), so the directory itself must only be writable by the pipeline.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "LATEST_NAME",
    "VERSION_RE",
    "ArtifactError",
    "ArtifactIntegrityError",
    "NoModelError",
    "atomic_write_bytes",
    "list_versions",
    "load_latest",
    "load_version",
    "promote",
    "read_latest_manifest",
    "save_artifact",
    "validate_version",
]

LATEST_NAME = "latest.json"
PICKLE_PROTOCOL = 5
FILE_MODE = 0o644
# <UTC yyyymmddThhmmssZ>-<8 hex of sha256>: sortable as plain strings, and strict enough
# that a validated version can never contain a path separator or "..".
VERSION_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
_TS_FORMAT = "%Y%m%dT%H%M%SZ"
# Keys save_artifact owns; a caller passing them is almost certainly a bug (e.g. re-saving
# an old manifest), so refuse instead of silently overwriting.
RESERVED_KEYS = frozenset({"version", "created_at", "sha256", "size_bytes", "file", "path"})


class ArtifactError(Exception):
    """Base class for model-artifact errors."""


class ArtifactIntegrityError(ArtifactError):
    """A stored artifact does not match its manifest (corrupt, truncated or tampered)."""


class NoModelError(ArtifactError):
    """No model is available (nothing promoted yet, or the requested version is absent)."""


# --------------------------------------------------------------------------- writes


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; without it a power cut can "undo" os.replace.
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``.

    Readers see either the old file or the complete new one, never a partial write: the
    bytes go to a temp file in the same directory (same filesystem, so the rename is
    atomic), are flushed and fsynced, then ``os.replace``-d over ``path``; finally the
    directory is fsynced. On any failure the temp file is removed and ``path`` untouched.
    """
    path = Path(path)
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0o600; artifacts are meant to be readable by the serving tier
        # but never world-writable, independent of the process umask.
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fd = -1  # now owned (and closed) by the file object
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd != -1:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(directory)


def _json_default(obj: Any) -> Any:
    # Manifests often carry numpy scalars (metrics) or paths; store them as plain JSON.
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    if isinstance(obj, (Path, dt.datetime, dt.date)):
        return str(obj)
    raise TypeError(f"manifest value of type {type(obj).__name__} is not JSON-serializable")


def _dump_json(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def _format_version(when: dt.datetime, sha256: str) -> str:
    return f"{when.strftime(_TS_FORMAT)}-{sha256[:8]}"


def _next_version_time(root: Path, now: dt.datetime) -> dt.datetime:
    """``now`` to the second, bumped past the newest existing version if needed.

    Two saves within one second would otherwise collide (same model) or sort by hash
    rather than by save order (different models); strictly increasing timestamps keep
    versions unique and in save order. Saves into one root are assumed to be serialized
    (one Dagster materialization at a time); this is not a cross-process lock.
    """
    when = now.replace(microsecond=0)
    for p in root.iterdir():
        if p.suffix not in (".pkl", ".json") or not VERSION_RE.fullmatch(p.stem):
            continue
        try:
            stamp = dt.datetime.strptime(p.stem.split("-", 1)[0], _TS_FORMAT)
        except ValueError:  # matches the regex but is no real date (e.g. month 13)
            continue
        stamp = stamp.replace(tzinfo=dt.UTC)
        if when <= stamp:
            when = stamp + dt.timedelta(seconds=1)
    return when


def save_artifact(root: Path, model: object, manifest: dict, promote: bool = True) -> dict:
    """Pickle ``model`` into a new version under ``root``; optionally make it ``latest``.

    Write order is pickle, then its manifest, then ``latest.json``: a crash at any point
    leaves ``latest`` pointing at a complete, verified version (old or new). Returns the
    full manifest (caller's fields plus version, created_at, sha256, size_bytes, file,
    and the derived, unstored ``path``).
    """
    clash = RESERVED_KEYS.intersection(manifest)
    if clash:
        raise ValueError(f"manifest keys {sorted(clash)} are set by save_artifact itself")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    data = pickle.dumps(model, protocol=PICKLE_PROTOCOL)
    sha256 = hashlib.sha256(data).hexdigest()
    now = dt.datetime.now(dt.UTC)
    version = _format_version(_next_version_time(root, now), sha256)

    full = dict(manifest)
    full.update(
        version=version,
        created_at=now.isoformat(),
        sha256=sha256,
        size_bytes=len(data),
        file=f"{version}.pkl",
    )
    manifest_bytes = _dump_json(full)  # serialize first: a bad manifest writes nothing

    atomic_write_bytes(root / f"{version}.pkl", data)
    atomic_write_bytes(root / f"{version}.json", manifest_bytes)
    if promote:
        atomic_write_bytes(root / LATEST_NAME, manifest_bytes)
    # Return what is on disk (numpy scalars -> plain JSON types), so it equals what
    # load_latest/list_versions later hand back.
    return _with_path(root, json.loads(manifest_bytes))


def promote(root: Path, version: str) -> dict:
    """Point ``latest`` at an existing ``version`` (e.g. a rollback) after verifying it."""
    root = Path(root)
    _, manifest = load_version(root, version)  # refuses missing/corrupt versions
    stored = {k: v for k, v in manifest.items() if k != "path"}
    atomic_write_bytes(root / LATEST_NAME, _dump_json(stored))
    return manifest


# --------------------------------------------------------------------------- reads


def validate_version(version: str) -> str:
    """Return ``version`` if it is a well-formed version id, else raise ``ValueError``."""
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise ValueError(
            f"invalid model version {version!r}: expected e.g. '20261127T183012Z-3fa2b1c9'"
        )
    return version


def _with_path(root: Path, manifest: dict) -> dict:
    """Add ``path``: the absolute pickle path, derived from the *current* root.

    Not stored on disk (the directory may be moved or mounted elsewhere); every manifest
    this module returns carries it so callers can log or link the file.
    """
    version = manifest.get("version")
    if isinstance(version, str) and VERSION_RE.fullmatch(version):
        return {**manifest, "path": str(Path(root).absolute() / f"{version}.pkl")}
    return manifest


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactIntegrityError(f"manifest {path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ArtifactIntegrityError(f"manifest {path} is not a JSON object")
    return manifest


def read_latest_manifest(root: Path) -> dict | None:
    """The champion's manifest, or ``None`` if nothing has been promoted yet."""
    try:
        return _with_path(root, _read_manifest(Path(root) / LATEST_NAME))
    except FileNotFoundError:
        return None


def list_versions(root: Path) -> list[dict]:
    """Manifests of every saved version under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    manifests = [
        _with_path(root, _read_manifest(p))
        for p in root.glob("*.json")
        if p.name != LATEST_NAME and VERSION_RE.fullmatch(p.stem)
    ]
    return sorted(manifests, key=lambda m: str(m.get("version", "")))


def _load_verified(root: Path, manifest: dict, source: Path) -> object:
    """Unpickle ``<version>.pkl`` only after its size and SHA-256 match ``manifest``."""
    version = manifest.get("version")
    try:
        validate_version(version)
    except ValueError as exc:
        raise ArtifactIntegrityError(f"manifest {source} has {exc}") from exc
    expected_sha = manifest.get("sha256")
    expected_size = manifest.get("size_bytes")
    if not isinstance(expected_sha, str) or not isinstance(expected_size, int):
        raise ArtifactIntegrityError(f"manifest {source} lacks sha256/size_bytes")

    # The path is built from the validated version, never from the manifest's "file".
    pkl = root / f"{version}.pkl"
    try:
        data = pkl.read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactIntegrityError(f"model file {pkl} referenced by {source} is missing") from exc
    if len(data) != expected_size:
        raise ArtifactIntegrityError(
            f"model file {pkl}: size {len(data)} does not match manifest ({expected_size} "
            f"bytes); checksum doesn't match, refusing to unpickle"
        )
    actual_sha = hashlib.sha256(data).hexdigest()
    if actual_sha != expected_sha:
        raise ArtifactIntegrityError(
            f"model file {pkl}: SHA-256 checksum doesn't match manifest {source} "
            f"(expected {expected_sha}, got {actual_sha}); refusing to unpickle"
        )
    return pickle.loads(data)


def load_version(root: Path, version: str) -> tuple[object, dict]:
    """Load and verify a specific version. Raises ``ValueError`` for a malformed id."""
    root = Path(root)
    validate_version(version)
    path = root / f"{version}.json"
    try:
        manifest = _read_manifest(path)
    except FileNotFoundError as exc:
        raise NoModelError(f"model version {version} not found under {root}") from exc
    if manifest.get("version") != version:
        raise ArtifactIntegrityError(
            f"manifest {path} describes version {manifest.get('version')!r}, not {version!r}"
        )
    return _load_verified(root, manifest, path), _with_path(root, manifest)


def load_latest(root: Path) -> tuple[object, dict]:
    """Load and verify the promoted (champion) model."""
    root = Path(root)
    manifest = read_latest_manifest(root)
    if manifest is None:
        raise NoModelError(
            f"no model has been promoted yet under {root}; materialize model_artifact first"
        )
    return _load_verified(root, manifest, root / LATEST_NAME), manifest
