"""Dagster resource wrapping the versioned model-artifact store (``recsys_assets.ml.artifacts``).

Assets and the serving side depend on this resource rather than on paths, so tests and
deployments point it at a different directory through config alone.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from recsys_assets.ml import artifacts
from recsys_assets.settings import Settings


class ModelStore(dg.ConfigurableResource):
    """Versioned, atomic, checksum-verified (and optionally HMAC-signed) model artifacts."""

    root: str
    signing_key: str | None = Field(
        default=None,
        description="HMAC key for manifests (RECSYS_MODEL_SIGNING_KEY); when set, unsigned "
        "or mismatched models are refused",
    )

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> ModelStore:
        """Store rooted at ``<RECSYS_HOME>/models/surprise`` (``Settings.models_dir``)."""
        settings = settings or Settings.from_env()
        return cls(root=str(settings.models_dir), signing_key=settings.signing_key)

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser()

    def _key(self) -> bytes | None:
        return self.signing_key.encode() if self.signing_key else None

    def save(self, model: object, manifest: dict, promote: bool = True) -> dict:
        """Save a new version; if ``promote``, it becomes ``latest``. Returns its manifest."""
        return artifacts.save_artifact(
            self.root_path, model, manifest, promote=promote, signing_key=self._key()
        )

    def load_latest(self) -> tuple[object, dict]:
        """The promoted model and its manifest; raises ``NoModelError`` if none yet."""
        return artifacts.load_latest(self.root_path, signing_key=self._key())

    def load_version(self, version: str) -> tuple[object, dict]:
        """A specific version and its manifest, verified against its checksum."""
        return artifacts.load_version(self.root_path, version, signing_key=self._key())

    def promote(self, version: str, reason: str = "manual") -> dict:
        """Make an existing version ``latest`` and record it in the champion history."""
        return artifacts.promote(self.root_path, version, reason, signing_key=self._key())

    def rollback(self) -> tuple[dict, dict]:
        """Return to the previous champion; (old, new) manifests."""
        return artifacts.rollback(self.root_path, signing_key=self._key())

    def history(self) -> list[dict]:
        """Champion history, oldest first."""
        return artifacts.read_history(self.root_path)

    def prune(self, keep_last: int) -> list[str]:
        """Delete versions beyond the newest ``keep_last`` that were never champion."""
        return artifacts.prune(self.root_path, keep_last)

    def latest_manifest(self) -> dict | None:
        """The champion's manifest (from the history if ``latest.json`` is unreadable)."""
        return artifacts.champion_manifest(self.root_path)

    def versions(self) -> list[dict]:
        """Manifests of all readable saved versions, oldest first."""
        return artifacts.list_versions(self.root_path)

    def scan(self) -> tuple[list[dict], dict[str, str]]:
        """(readable manifests, {version: problem} for unreadable ones)."""
        return artifacts.scan_versions(self.root_path)

    def verify(self, manifest: dict) -> str | None:
        """What is wrong with a version's files (signature, size, SHA-256), or None."""
        return artifacts.verify_version(self.root_path, manifest, signing_key=self._key())
