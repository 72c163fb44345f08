"""Dagster resource for the model store: its configuration, providing an `ArtifactStore`.

Assets, checks and sensors declare `model_store: dg.ResourceParam[ArtifactStore]` and receive
the plain store (`create_resource`); tests and deployments point it elsewhere through config
alone (a directory, or an fsspec URL such as `s3://bucket/models`).
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from recsys_assets.ml.artifacts import ArtifactStore


class ModelStore(dg.ConfigurableResource):
    """Versioned, atomic, checksum-verified (and optionally HMAC-signed) model artifacts."""

    root: str = Field(description="Directory or fsspec URL of the model versions")
    signing_key: str | None = Field(
        default=None,
        description="HMAC key for manifests (RECSYS_MODEL_SIGNING_KEY); when set, unsigned "
        "or mismatched models are refused",
    )

    def store(self) -> ArtifactStore:
        """The plain store this configuration describes (what assets and checks receive)."""
        return ArtifactStore(self.root, signing_key=self.signing_key)

    def create_resource(self, context: dg.InitResourceContext) -> ArtifactStore:
        # Dagster's documented way for a ConfigurableResource to hand user code another object.
        return self.store()
