"""Dagster resource wrapping the versioned model-artifact store (``recsys_assets.ml.artifacts``).

Assets and the serving side depend on this resource rather than on paths, so tests and
deployments point it at a different directory through config alone.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from recsys_assets import settings
from recsys_assets.ml import artifacts


class ModelStore(dg.ConfigurableResource):
    """Versioned, atomic, checksum-verified model artifacts under ``root``."""

    root: str

    @classmethod
    def from_env(cls) -> ModelStore:
        """Store rooted at ``<RECSYS_HOME>/models/surprise`` (see ``settings.models_dir``)."""
        return cls(root=str(settings.models_dir()))

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser()

    def save(self, model: object, manifest: dict, promote: bool = True) -> dict:
        """Save a new version; if ``promote``, it becomes ``latest``. Returns its manifest."""
        return artifacts.save_artifact(self.root_path, model, manifest, promote=promote)

    def load_latest(self) -> tuple[object, dict]:
        """The promoted model and its manifest; raises ``NoModelError`` if none yet."""
        return artifacts.load_latest(self.root_path)

    def load_version(self, version: str) -> tuple[object, dict]:
        """A specific version and its manifest, verified against its checksum."""
        return artifacts.load_version(self.root_path, version)

    def promote(self, version: str) -> dict:
        """Make an existing version ``latest`` (e.g. to roll back)."""
        return artifacts.promote(self.root_path, version)

    def latest_manifest(self) -> dict | None:
        return artifacts.read_latest_manifest(self.root_path)

    def versions(self) -> list[dict]:
        """Manifests of all saved versions, oldest first."""
        return artifacts.list_versions(self.root_path)
