"""Manifests: names, version ids, errors, canonical JSON and HMAC signatures."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from pathlib import PurePath
from typing import Any

LATEST_NAME = "latest.json"
HISTORY_NAME = "champions.json"
SIGNATURE_KEY = "signature"
# <UTC yyyymmddThhmmssZ>-<8 hex of sha256>: sortable as plain strings, and strict enough
# that a validated version can never contain a path separator or "..".
VERSION_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
_TS_FORMAT = "%Y%m%dT%H%M%SZ"
# Keys the store owns; a caller passing them is almost certainly a bug (e.g. re-saving an
# old manifest), so refuse instead of silently overwriting.
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


def validate_version(version: str) -> str:
    """Return ``version`` if it is a well-formed version id, else raise ``ValueError``."""
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise ValueError(
            f"invalid model version {version!r}: expected e.g. '20261127T183012Z-3fa2b1c9'"
        )
    return version


def version_of(name: str, suffix: str) -> str | None:
    """The version a file name ``<version><suffix>`` stores, or None for any other name."""
    stem = name[: -len(suffix)] if name.endswith(suffix) else None
    return stem if stem is not None and VERSION_RE.fullmatch(stem) else None


def format_version(when: dt.datetime, sha256: str) -> str:
    return f"{when.strftime(_TS_FORMAT)}-{sha256[:8]}"


def version_time(version: str) -> dt.datetime | None:
    """The UTC save time in a version id (None if it is no real date, e.g. month 13)."""
    try:
        stamp = dt.datetime.strptime(version.split("-", 1)[0], _TS_FORMAT)
    except ValueError:
        return None
    return stamp.replace(tzinfo=dt.UTC)


def _json_default(obj: Any) -> Any:
    # Manifests often carry numpy scalars (metrics) or paths; store them as plain JSON.
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    if isinstance(obj, (PurePath, dt.datetime, dt.date)):
        return str(obj)
    raise TypeError(f"manifest value of type {type(obj).__name__} is not JSON-serializable")


def dump_json(manifest: dict | list) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def load_json(data: bytes, source: str, expected: type, shape: str) -> Any:
    """JSON of type ``expected`` from ``data``; ArtifactIntegrityError naming ``source``."""
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        # The decoder's error is in the message; chained, it would be what a failed run names.
        raise ArtifactIntegrityError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(value, expected):
        raise ArtifactIntegrityError(f"{source} is not {shape}")
    return value


def parse_manifest(data: bytes, source: object) -> dict:
    """A manifest from its bytes; ArtifactIntegrityError naming ``source`` if it is not one."""
    return load_json(data, f"manifest {source}", dict, "a JSON object")


def _signed_payload(manifest: dict) -> bytes:
    # Canonical JSON of everything but the signature and the derived path.
    body = {k: v for k, v in manifest.items() if k not in (SIGNATURE_KEY, "path")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=_json_default).encode()


def sign_manifest(manifest: dict, key: bytes) -> str:
    """HMAC-SHA256 (hex) of the manifest's canonical JSON."""
    return hmac.new(key, _signed_payload(manifest), hashlib.sha256).hexdigest()


def verify_signature(manifest: dict, key: bytes | None, source: object) -> None:
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


def checked_version(manifest: dict, source: object) -> str:
    """The manifest's version, validated, and that it carries a checksum and a size."""
    try:
        version = validate_version(manifest.get("version"))
    except ValueError as exc:
        raise ArtifactIntegrityError(f"manifest {source} has {exc}") from exc
    if not isinstance(manifest.get("sha256"), str) or not isinstance(
        manifest.get("size_bytes"), int
    ):
        raise ArtifactIntegrityError(f"manifest {source} lacks sha256/size_bytes")
    return version


def verify_checksum(manifest: dict, data: bytes, source: object, pkl: object) -> None:
    """ArtifactIntegrityError unless ``data`` has the manifest's size and SHA-256."""
    expected_sha, expected_size = manifest["sha256"], manifest["size_bytes"]
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
