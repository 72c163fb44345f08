"""Versioned, atomic, checksum-verified model artifacts on the local filesystem.

Layout under ``root`` (e.g. ``<RECSYS_HOME>/models/surprise/``)::

    20261127T183012Z-3fa2b1c9.pkl   pickled model (protocol 5)
    20261127T183012Z-3fa2b1c9.json  manifest: caller's fields + version/created_at/sha256/...
    latest.json                     the pointer: a copy of the champion's manifest

Why: the old system exported models non-atomically (a crash mid-write left a truncated
file that the web tier then failed on) and ``pickle.load``-ed whatever file sat at the
path. Here every write is write-temp + fsync + ``os.replace`` + directory fsync, and every
load checks size and SHA-256 against the manifest *before* unpickling.

The checksum guards against corruption and against a swapped/tampered pickle; on its own it
is not a signature (someone who can rewrite both the pickle and the manifest can still run
code through ``pickle``). With a signing key (``RECSYS_MODEL_SIGNING_KEY``) every manifest
carries an HMAC-SHA256 ``signature`` over its content, and loads refuse unsigned or
mismatched manifests before anything is unpickled: rewriting a model then needs the key.

Champions: ``champions.json`` is the promotion history (a stack: promotions push, a rollback
marks the current champion rolled back and returns to the one before). Retention (``prune``)
keeps the newest K versions plus every version that was ever champion.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
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
    "ArtifactSignatureError",
    "NoModelError",
    "atomic_write_bytes",
    "champion_manifest",
    "champion_versions",
    "clean_stale_temp_files",
    "list_versions",
    "load_latest",
    "load_version",
    "promote",
    "prune",
    "read_history",
    "read_latest_manifest",
    "rollback",
    "save_artifact",
    "scan_versions",
    "sign_manifest",
    "validate_version",
    "verify_signature",
    "verify_version",
]

LATEST_NAME = "latest.json"
HISTORY_NAME = "champions.json"
SIGNATURE_KEY = "signature"
PICKLE_PROTOCOL = 5
FILE_MODE = 0o644
# <UTC yyyymmddThhmmssZ>-<8 hex of sha256>: sortable as plain strings, and strict enough
# that a validated version can never contain a path separator or "..".
VERSION_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
_TS_FORMAT = "%Y%m%dT%H%M%SZ"
_MAX_VERSION_CLASHES = 100
# Temp files (".<name>.<pid>.<random>.tmp") of a writer that is gone, or older than this, are
# leftovers of a killed write.
STALE_TEMP_SECONDS = 24 * 3600
# A pickle without its manifest (a write killed between the two) older than this is removed.
ORPHAN_SECONDS = 3600
# Keys save_artifact owns; a caller passing them is almost certainly a bug (e.g. re-saving
# an old manifest), so refuse instead of silently overwriting.
RESERVED_KEYS = frozenset(
    {"version", "created_at", "sha256", "size_bytes", "file", "path", SIGNATURE_KEY}
)


class ArtifactError(Exception):
    """Base class for model-artifact errors."""


class ArtifactIntegrityError(ArtifactError):
    """A stored artifact does not match its manifest (corrupt, truncated or tampered)."""


class NoModelError(ArtifactError):
    """No model is available (nothing promoted yet, or the requested version is absent)."""


class ArtifactSignatureError(ArtifactIntegrityError):
    """A signing key is configured and the manifest is unsigned or its signature is wrong."""


# --------------------------------------------------------------------------- signatures


def _signed_payload(manifest: dict) -> bytes:
    # Canonical JSON of everything but the signature and the derived path.
    body = {k: v for k, v in manifest.items() if k not in (SIGNATURE_KEY, "path")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=_json_default).encode()


def sign_manifest(manifest: dict, key: bytes) -> str:
    """HMAC-SHA256 (hex) of the manifest's canonical JSON."""
    return hmac.new(key, _signed_payload(manifest), hashlib.sha256).hexdigest()


def verify_signature(manifest: dict, key: bytes | None, source: Path) -> None:
    """Raise ``ArtifactSignatureError`` unless ``key`` is None or the signature matches."""
    if key is None:
        return
    signature = manifest.get(SIGNATURE_KEY)
    if not isinstance(signature, str):
        raise ArtifactSignatureError(
            f"manifest {source} is not signed, but a signing key is configured "
            "(RECSYS_MODEL_SIGNING_KEY); refusing to load an unsigned model"
        )
    if not hmac.compare_digest(signature, sign_manifest(manifest, key)):
        raise ArtifactSignatureError(
            f"manifest {source}: HMAC signature does not match (tampered manifest, or signed "
            "with a different RECSYS_MODEL_SIGNING_KEY); refusing to load"
        )


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


def _temp_prefix(name: str) -> str:
    # The writer's pid is in the name, so a later cleanup can tell a dead writer's leftover
    # from a write in progress (see clean_stale_temp_files).
    return f".{name}.{os.getpid()}."


def atomic_write_bytes(path: Path, data: bytes, exclusive: bool = False) -> None:
    """Atomically replace ``path`` with ``data``.

    Readers see either the old file or the complete new one, never a partial write: the
    bytes go to a temp file in the same directory (same filesystem, so the rename is
    atomic), are flushed and fsynced, then ``os.replace``-d over ``path``; finally the
    directory is fsynced. On any failure the temp file is removed and ``path`` untouched.
    ``exclusive``: publish with ``os.link`` instead, which raises ``FileExistsError`` when
    ``path`` exists (another process took that name first) rather than overwriting it.
    """
    path = Path(path)
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=_temp_prefix(path.name), suffix=".tmp")
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
        if exclusive:
            os.link(tmp, path)
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        if fd != -1:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # A failed write (disk full, I/O error) names no file by itself: name it.
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
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


def save_artifact(
    root: Path,
    model: object,
    manifest: dict,
    promote: bool = True,
    signing_key: bytes | None = None,
) -> dict:
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
    # serialize first: a bad manifest writes nothing
    json.loads(_dump_json({**manifest, "sha256": sha256}))
    when = _next_version_time(root, now)
    # The pickle is published under a name no other process can take at the same moment
    # (os.link fails if it exists): two runs in the same second on the same data get
    # distinct versions instead of overwriting each other.
    for _ in range(_MAX_VERSION_CLASHES):
        version = _format_version(when, sha256)
        try:
            atomic_write_bytes(root / f"{version}.pkl", data, exclusive=True)
            break
        except FileExistsError:
            when = max(when, _next_version_time(root, now)) + dt.timedelta(seconds=1)
    else:
        raise ArtifactError(f"could not find a free version name under {root}")

    full = dict(manifest)
    full.update(
        version=version,
        created_at=now.isoformat(),
        sha256=sha256,
        size_bytes=len(data),
        file=f"{version}.pkl",
    )
    # Round-trip through JSON first so the signature covers exactly what is stored.
    full = json.loads(_dump_json(full))
    if signing_key is not None:
        full[SIGNATURE_KEY] = sign_manifest(full, signing_key)
    manifest_bytes = _dump_json(full)

    atomic_write_bytes(root / f"{version}.json", manifest_bytes)
    if promote:
        atomic_write_bytes(root / LATEST_NAME, manifest_bytes)
        _push_champion(root, version, "saved with promote=True")
    # Return what is on disk (numpy scalars -> plain JSON types), so it equals what
    # load_latest/list_versions later hand back.
    return _with_path(root, json.loads(manifest_bytes))


def promote(
    root: Path, version: str, reason: str = "manual", signing_key: bytes | None = None
) -> dict:
    """Point ``latest`` at an existing ``version`` after verifying it; record it as champion."""
    root = Path(root)
    _, manifest = load_version(root, version, signing_key=signing_key)  # refuses bad versions
    _refuse_unsigned_over_signed(root, manifest)
    stored = {k: v for k, v in manifest.items() if k != "path"}
    atomic_write_bytes(root / LATEST_NAME, _dump_json(stored))
    _push_champion(root, version, reason)
    return manifest


def _refuse_unsigned_over_signed(root: Path, manifest: dict) -> None:
    """Signing is sticky: once the champion is signed, an unsigned model never replaces it
    (the serving side, which has the key, would refuse it and keep no model at all)."""
    champion = champion_manifest(root)
    if champion is None or SIGNATURE_KEY not in champion or SIGNATURE_KEY in manifest:
        return
    raise ArtifactSignatureError(
        f"refusing to promote unsigned model {manifest.get('version')}: the champion "
        f"{champion.get('version')} is signed. Set RECSYS_MODEL_SIGNING_KEY where training "
        "runs (see the README on key rotation) and train again"
    )


def read_history(root: Path) -> list[dict]:
    """Champion history, oldest first: ``version, promoted_at, reason, rolled_back_at``."""
    try:
        history = json.loads((Path(root) / HISTORY_NAME).read_bytes())
    except FileNotFoundError:
        return []
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactIntegrityError(f"{Path(root) / HISTORY_NAME} is not valid JSON") from exc
    if not isinstance(history, list):
        raise ArtifactIntegrityError(f"{Path(root) / HISTORY_NAME} is not a JSON list")
    return history


def _write_history(root: Path, history: list[dict]) -> None:
    atomic_write_bytes(Path(root) / HISTORY_NAME, _dump_json(history))


def _push_champion(root: Path, version: str, reason: str) -> None:
    history = read_history(root)
    history.append(
        {
            "version": version,
            "promoted_at": dt.datetime.now(dt.UTC).isoformat(),
            "reason": reason,
            "rolled_back_at": None,
        }
    )
    _write_history(root, history)


def champion_versions(root: Path) -> set[str]:
    """Every version that was ever champion (kept forever by ``prune``)."""
    return {entry["version"] for entry in read_history(root)}


def rollback(root: Path, signing_key: bytes | None = None) -> tuple[dict, dict]:
    """Make the previous champion ``latest`` again; returns (old, new) champion manifests.

    The current champion's history entry is marked rolled back, so a second rollback goes
    one further back rather than flipping between two versions.
    """
    root = Path(root)
    current = champion_manifest(root)
    if current is None:
        raise NoModelError(f"no champion under {root}; nothing to roll back")
    history = read_history(root)
    live = [i for i, e in enumerate(history) if not e.get("rolled_back_at")]
    # The current champion's newest live entry, then the newest live entry before it with a
    # different version: the champion it replaced.
    mine = [i for i in live if history[i]["version"] == current["version"]]
    cut = mine[-1] if mine else len(history)
    previous = [i for i in live if i < cut and history[i]["version"] != current["version"]]
    if not previous:
        raise NoModelError(
            f"{current['version']} has no previous champion to roll back to under {root}"
        )
    target = history[previous[-1]]["version"]
    _, manifest = load_version(root, target, signing_key=signing_key)  # verify first
    _refuse_unsigned_over_signed(root, manifest)
    stored = {k: v for k, v in manifest.items() if k != "path"}
    atomic_write_bytes(root / LATEST_NAME, _dump_json(stored))
    now = dt.datetime.now(dt.UTC).isoformat()
    for i in mine:
        history[i]["rolled_back_at"] = now
    _write_history(root, history)
    return current, manifest


def prune(root: Path, keep_last: int) -> list[str]:
    """Delete versions that are neither among the newest ``keep_last`` nor ever champion.

    Returns the deleted versions. The current ``latest`` is always kept.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    root = Path(root)
    if not root.is_dir():
        return []
    clean_stale_temp_files(root)
    # By file name, not manifest content: an unreadable manifest never blocks retention.
    versions = sorted(
        p.stem
        for p in root.glob("*.json")
        if p.name != LATEST_NAME and VERSION_RE.fullmatch(p.stem)
    )
    try:
        keep = set(versions[-keep_last:]) | champion_versions(root)
    except ArtifactIntegrityError:
        return []  # without the history we cannot tell past champions apart: delete nothing
    latest = champion_manifest(root)
    if latest is not None:
        keep.add(latest["version"])
    deleted = []
    for orphan in _orphan_pickles(root):
        if orphan not in keep:
            with contextlib.suppress(FileNotFoundError):
                (root / f"{orphan}.pkl").unlink()
            deleted.append(orphan)
    for version in versions:
        if version in keep:
            continue
        # Manifest first: a version without its manifest is invisible, never half-loadable.
        for suffix in (".json", ".pkl"):
            with contextlib.suppress(FileNotFoundError):
                (root / f"{version}{suffix}").unlink()
        deleted.append(version)
    if deleted:
        _fsync_dir(root)
    return deleted


def _orphan_pickles(root: Path) -> list[str]:
    """Versions with a pickle but no manifest, older than ORPHAN_SECONDS (a killed save)."""
    now = dt.datetime.now().timestamp()
    orphans = []
    for pkl in root.glob("*.pkl"):
        if not VERSION_RE.fullmatch(pkl.stem) or pkl.with_suffix(".json").exists():
            continue
        with contextlib.suppress(FileNotFoundError):
            if now - pkl.stat().st_mtime > ORPHAN_SECONDS:
                orphans.append(pkl.stem)
    return sorted(orphans)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def clean_stale_temp_files(root: Path) -> list[Path]:
    """Remove temp files left by killed writes: their writer's pid is gone (this host), or
    they are older than STALE_TEMP_SECONDS. Returns the removed paths."""
    removed = []
    now = dt.datetime.now().timestamp()
    for tmp in Path(root).glob(".*.tmp"):
        match = re.fullmatch(r"\.(.+)\.([0-9]+)\.[^.]+\.tmp", tmp.name)
        try:
            stale = now - tmp.stat().st_mtime > STALE_TEMP_SECONDS
            if match and not stale:
                stale = int(match.group(2)) != os.getpid() and not _pid_alive(int(match.group(2)))
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            continue
    return removed


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


def champion_manifest(root: Path) -> dict | None:
    """The champion's manifest, recovering from an unreadable ``latest.json``.

    ``latest.json`` when it is readable; otherwise the newest champion in the history
    (not rolled back) whose own manifest is readable, so the gates, retention and
    ``models promote/rollback`` keep working and can rewrite the pointer.
    """
    root = Path(root)
    try:
        return read_latest_manifest(root)
    except (ArtifactIntegrityError, OSError):
        pass
    try:
        history = read_history(root)
    except ArtifactIntegrityError:
        return None
    for entry in reversed(history):
        if not isinstance(entry, dict) or entry.get("rolled_back_at"):
            continue
        version = entry.get("version")
        if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
            continue
        try:
            manifest = _read_manifest(root / f"{version}.json")
        except (ArtifactIntegrityError, OSError):
            continue
        if manifest.get("version") == version:
            return _with_path(root, manifest)
    return None


def scan_versions(root: Path) -> tuple[list[dict], dict[str, str]]:
    """(readable manifests oldest first, {version: problem} for unreadable ones).

    A damaged manifest is reported, never raised: one bad file must not hide the others.
    """
    root = Path(root)
    if not root.is_dir():
        return [], {}
    manifests, problems = [], {}
    for p in sorted(root.glob("*.json")):
        if p.name == LATEST_NAME or not VERSION_RE.fullmatch(p.stem):
            continue
        try:
            manifest = _read_manifest(p)
        except (ArtifactIntegrityError, OSError) as exc:
            problems[p.stem] = str(exc)
            continue
        if manifest.get("version") != p.stem:
            problems[p.stem] = f"manifest {p} describes version {manifest.get('version')!r}"
            continue
        manifests.append(_with_path(root, manifest))
    return sorted(manifests, key=lambda m: m["version"]), problems


def list_versions(root: Path) -> list[dict]:
    """Manifests of every readable saved version under ``root``, oldest first (damaged ones
    are skipped; ``scan_versions`` reports them)."""
    return scan_versions(root)[0]


def verify_version(root: Path, manifest: dict, signing_key: bytes | None = None) -> str | None:
    """What is wrong with a saved version (signature, size, SHA-256), or None; never unpickles."""
    root = Path(root)
    source = root / f"{manifest.get('version')}.json"
    try:
        _verified_bytes(root, manifest, source, signing_key)
    except (ArtifactIntegrityError, OSError) as exc:
        return str(exc)
    return None


def _load_verified(
    root: Path, manifest: dict, source: Path, signing_key: bytes | None = None
) -> object:
    """Unpickle ``<version>.pkl`` only after its signature, size and SHA-256 check out."""
    return pickle.loads(_verified_bytes(root, manifest, source, signing_key))


def _verified_bytes(
    root: Path, manifest: dict, source: Path, signing_key: bytes | None = None
) -> bytes:
    """The pickle's bytes, after its signature, size and SHA-256 checked out."""
    verify_signature(manifest, signing_key, source)
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
    return data


def load_version(root: Path, version: str, signing_key: bytes | None = None) -> tuple[object, dict]:
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
    return _load_verified(root, manifest, path, signing_key), _with_path(root, manifest)


def load_latest(root: Path, signing_key: bytes | None = None) -> tuple[object, dict]:
    """Load and verify the promoted (champion) model."""
    root = Path(root)
    manifest = read_latest_manifest(root)
    if manifest is None:
        raise NoModelError(
            f"no model has been promoted yet under {root}; materialize model_artifact first"
        )
    return _load_verified(root, manifest, root / LATEST_NAME, signing_key), manifest
