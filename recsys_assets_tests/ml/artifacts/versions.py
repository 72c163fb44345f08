"""What the artifact-store tests save: version `k` (a tiny model, CV RMSE 1 - k/100)."""

from __future__ import annotations

from recsys_assets.ml.artifacts import ArtifactStore

KEY = b"test-signing-key"


def save_version(root, k: int, promote_it: bool, key: bytes | None = None) -> dict:
    return ArtifactStore(root, key).save(
        {"k": k}, {"cv_metrics": {"rmse_mean": 1.0 - k / 100}}, promote_it
    )
