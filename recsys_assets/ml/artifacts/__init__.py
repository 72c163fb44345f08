"""Versioned, atomic, checksum-verified model artifacts: `ArtifactStore`.

Layout under the store's root (``<RECSYS_HOME>/models/surprise/`` by default, or any fsspec
URL such as ``s3://bucket/models``)::

    20261127T183012Z-3fa2b1c9.pkl   pickled model (protocol 5)
    20261127T183012Z-3fa2b1c9.json  manifest: caller's fields + version/created_at/sha256/...
    latest.json                     the pointer: a copy of the champion's manifest
    champions.json                  the promotion history

Why: the old system exported models non-atomically (a crash mid-write left a truncated
file that the web tier then failed on) and ``pickle.load``-ed whatever file sat at the
path. Here every write replaces its name atomically (``files.py`` says how, per backend), a
version is written under its own unique name before the pointer is replaced in one
operation, and every load checks size and SHA-256 against the manifest *before* unpickling.

The checksum guards against corruption and against a swapped/tampered pickle; on its own it
is not a signature (someone who can rewrite both the pickle and the manifest can still run
code through ``pickle``). With a signing key (``RECSYS_MODEL_SIGNING_KEY``) every manifest
carries an HMAC-SHA256 ``signature`` over its content, and loads refuse unsigned or
mismatched manifests before anything is unpickled: rewriting a model then needs the key.

Champions: ``champions.json`` is a stack (promotions push, a rollback marks the current
champion rolled back and returns to the one before). Retention (``prune``) keeps the newest
K versions plus every version that was ever champion.

Modules: ``manifest`` (names, errors, JSON, signatures), ``files`` (local and fsspec
backends), ``history`` (the champion history and its pending marks), ``reader`` (reads and
verified loads), ``store`` (`ArtifactStore`: saves, promotion, rollback, retention). Plain
Python: no Dagster.
"""

from recsys_assets.ml.artifacts.files import (
    STALE_TEMP_SECONDS,
    atomic_write_bytes,
    clean_stale_temp_files,
)
from recsys_assets.ml.artifacts.manifest import (
    HISTORY_NAME,
    LATEST_NAME,
    VERSION_RE,
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactSignatureError,
    NoModelError,
    sign_manifest,
    validate_version,
    verify_signature,
)
from recsys_assets.ml.artifacts.store import ORPHAN_SECONDS, ArtifactStore

__all__ = [
    "HISTORY_NAME",
    "LATEST_NAME",
    "ORPHAN_SECONDS",
    "STALE_TEMP_SECONDS",
    "VERSION_RE",
    "ArtifactError",
    "ArtifactIntegrityError",
    "ArtifactSignatureError",
    "ArtifactStore",
    "NoModelError",
    "atomic_write_bytes",
    "clean_stale_temp_files",
    "sign_manifest",
    "validate_version",
    "verify_signature",
]
