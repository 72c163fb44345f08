"""`model_artifact`: the fitted model exported as a versioned, checksummed pickle."""

import platform
from importlib.metadata import version

import dagster as dg
import pandas as pd
from surprise import SVD

from recsys_assets.assets.training import svd_params_of
from recsys_assets.resources.model_store import ModelStore

_PACKAGES = ("dagster", "scikit-surprise", "numpy", "pandas", "scipy")


def package_versions() -> dict[str, str]:
    return {"python": platform.python_version(), **{p: version(p) for p in _PACKAGES}}


def data_fingerprint(ratings: pd.DataFrame) -> dict[str, int]:
    return {
        "rows": len(ratings),
        "users": int(ratings["user_id"].nunique()),
        "movies": int(ratings["movie_id"].nunique()),
        "max_timestamp": int(ratings["timestamp"].max()),
    }


def cv_metrics(report: pd.DataFrame) -> dict[str, float | int]:
    summary = report.set_index("fold")
    return {
        "n_folds": int(report.attrs.get("n_folds", len(report) - 2)),
        "rmse_mean": float(summary.loc["mean", "rmse"]),
        "rmse_std": float(summary.loc["std", "rmse"]),
        "mae_mean": float(summary.loc["mean", "mae"]),
        "mae_std": float(summary.loc["std", "mae"]),
    }


@dg.asset(group_name="training", compute_kind="pickle")
def model_artifact(
    context: dg.AssetExecutionContext,
    svd_model: SVD,
    cv_report: pd.DataFrame,
    ratings_df: pd.DataFrame,
    model_store: ModelStore,
) -> dg.Output[dict]:
    """`<version>.pkl` + `<version>.json` manifest in the model store; `latest` moved atomically."""
    params = svd_params_of(svd_model).as_dict()
    cv_params = cv_report.attrs.get("svd_params")
    if cv_params != params:
        # CV metrics are only a claim about this model if both ran the same hyperparameters.
        raise dg.Failure(
            f"cv_report was computed with {cv_params} but svd_model with {params}; "
            "materialize both with the same config (see training_run_config)"
        )
    manifest = model_store.save(
        svd_model,
        {
            "hyperparameters": params,
            "cv_metrics": cv_metrics(cv_report),
            "data_fingerprint": data_fingerprint(ratings_df),
            "packages": package_versions(),
            "dagster_run_id": context.run.run_id,
        },
    )
    context.log.info("saved model %s to %s", manifest["version"], manifest["path"])
    return dg.Output(
        manifest,
        metadata={
            "version": manifest["version"],
            "artifact_path": dg.MetadataValue.path(manifest["path"]),
            "sha256": manifest["sha256"],
            "size_bytes": manifest["size_bytes"],
            "cv_rmse": manifest["cv_metrics"]["rmse_mean"],
            "cv_mae": manifest["cv_metrics"]["mae_mean"],
        },
    )
