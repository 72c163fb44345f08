"""`model_artifact`: the fitted model exported as a versioned, checksummed pickle."""

import platform
from importlib.metadata import version

import dagster as dg
import pandas as pd
from surprise import SVD

from recsys_assets.assets.config import ArtifactConfig
from recsys_assets.assets.cv_tables import summary_rows
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets.ml.ease import EASEModel
from recsys_assets.ml.model_bundle import ModelBundle
from recsys_assets.ml.ranking import SOURCE_EASE
from recsys_assets.ml.selection.cv_result import CVResult
from recsys_assets.ml.selection.search_result import SearchResult
from recsys_assets.ml.stripped_svd import strip_svd
from recsys_assets.ml.training import fit_engine_of

_PACKAGES = ("dagster", "scikit-surprise", "numpy", "numba", "pandas", "scipy")


def package_versions() -> dict[str, str]:
    return {"python": platform.python_version(), **{p: version(p) for p in _PACKAGES}}


def data_fingerprint(ratings: pd.DataFrame) -> dict[str, int]:
    return {
        "rows": len(ratings),
        "users": int(ratings["user_id"].nunique()),
        "movies": int(ratings["movie_id"].nunique()),
        "max_timestamp": int(ratings["timestamp"].max()),
    }


# cv_report columns whose fold means go into the manifest (what the gates and `models list`
# read), if present.
_MANIFEST_MEANS = (
    "baseline_rmse",
    "baseline_mae",
    "global_mean_rmse",
    "global_mean_mae",
    "blend_ndcg",
    "svd_ndcg",
    "popular_ndcg",
    "blend_precision",
    "blend_recall",
    "ease_ndcg",
    "shipped_ndcg",
    "shipped_precision",
    "shipped_recall",
    "blend_validation_ndcg",
    "ease_validation_ndcg",
)


def cv_metrics(cv: CVResult) -> dict[str, float | int]:
    summary = summary_rows(cv.folds).set_index("fold")
    metrics: dict[str, float | int] = {
        "n_folds": cv.n_folds,
        "rmse_mean": float(summary.loc["mean", "rmse"]),
        "rmse_std": float(summary.loc["std", "rmse"]),
        "mae_mean": float(summary.loc["mean", "mae"]),
        "mae_std": float(summary.loc["std", "mae"]),
    }
    for column in _MANIFEST_MEANS:
        if column in summary.columns:
            metrics[f"{column}_mean"] = float(summary.loc["mean", column])
    return metrics


@dg.asset(group_name="training", compute_kind="pickle")
def model_artifact(
    context: dg.AssetExecutionContext,
    config: ArtifactConfig,
    svd_model: SVD,
    ranking_model: EASEModel | None,
    cv_report: CVResult,
    svd_hyperparameters: SearchResult,
    ratings_df: pd.DataFrame,
    model_store: dg.ResourceParam[ArtifactStore],
) -> dg.Output[dict]:
    """A new *candidate* version: `<version>.pkl` + `<version>.json` manifest in the model store.

    `latest` is not touched here: the promotion gates (asset checks in `recsys_assets.checks`)
    judge the candidate, and `champion_model` promotes it only if they all pass. The manifest
    records how the hyperparameters were chosen (`hyperparameter_search`). When the shipped
    list is EASE's, the pickled `ModelBundle` carries `ranking_model` too (so it is checksummed
    and signed with the SVD).
    """
    # One source: cv_report and svd_model both took svd_hyperparameters' choice.
    params = svd_hyperparameters.params.as_dict()
    policy = cv_report.policy
    if policy.ranker == SOURCE_EASE and (
        ranking_model is None or cv_report.ease is None or cv_report.ease.lam != ranking_model.lam
    ):
        # Stored values of separate runs: an EASE model of another λ than this CV chose.
        raise dg.Failure(
            f"cv_report chose the EASE list with {cv_report.ease} but ranking_model is "
            f"{ranking_model.describe() if ranking_model is not None else None}; "
            "materialize both in the same run"
        )
    # The artifact keeps what predict and serving need, not the training ratings.
    bundle = ModelBundle.of(strip_svd(svd_model), policy, ranking_model)
    manifest = model_store.save(
        bundle,
        {
            "hyperparameters": params,
            "hyperparameter_search": svd_hyperparameters.record,
            # Which fit produced the model (compiled or Surprise's own; same model bit for bit).
            "fit_engine": fit_engine_of(svd_model),
            "cv_metrics": cv_metrics(cv_report),
            # What the search and the CV ran on (the gates compare like with like).
            **(
                {"evaluation": cv_report.evaluated.as_dict()}
                if cv_report.evaluated is not None
                else {}
            ),
            "ranking": policy.as_dict(),
            "ranking_model": (
                {**ranking_model.describe(), "shipped": policy.ranker == SOURCE_EASE}
                if ranking_model is not None
                else None
            ),
            "data_fingerprint": data_fingerprint(ratings_df),
            "packages": package_versions(),
            "dagster_run_id": context.run.run_id,
        },
        promote=False,
    )
    context.log.info("saved candidate model %s to %s", manifest["version"], manifest["path"])
    deleted = model_store.prune(config.keep_versions)
    if deleted:
        context.log.info("retention: deleted %d old versions %s", len(deleted), deleted)
    return dg.Output(
        manifest,
        metadata={
            "version": manifest["version"],
            "artifact_path": dg.MetadataValue.path(manifest["path"]),
            "sha256": manifest["sha256"],
            "signed": "signature" in manifest,
            "fit_engine": manifest["fit_engine"],
            "size_bytes": manifest["size_bytes"],
            "cv_rmse": manifest["cv_metrics"]["rmse_mean"],
            "cv_mae": manifest["cv_metrics"]["mae_mean"],
            "ranking_policy": dg.MetadataValue.json(policy.as_dict()),
            "shipped_list": policy.ranker,
            "versions_deleted": len(deleted),
        },
    )


@dg.asset(group_name="training", compute_kind="pickle")
def champion_model(
    context: dg.AssetExecutionContext,
    model_artifact: dict,
    model_store: dg.ResourceParam[ArtifactStore],
) -> dg.MaterializeResult:
    """The model `latest` points to: the candidate (`model_artifact`'s manifest), once every
    blocking gate passed.

    Runs only after the checks on `model_artifact` passed (they are blocking), so `latest`
    never points at a model that failed a gate; otherwise the previous champion stays.
    """
    candidate = str(model_artifact["version"])
    if model_artifact.get("dagster_run_id") != context.run.run_id:
        # A stored candidate of an earlier run: its gates did not run here.
        raise dg.Failure(
            f"champion_model promotes the candidate model_artifact saved in the same run, not "
            f"{candidate} (run {model_artifact.get('dagster_run_id')}); materialize "
            "model_artifact with it (use `recsys models promote VERSION` to promote an "
            "existing version by hand)"
        )
    previous = model_store.latest_manifest()  # raises if the store cannot tell its champion
    # All or nothing: either latest.json and champions.json both name the candidate, or
    # neither changed and this step fails (ArtifactStore.promote).
    manifest = model_store.promote(
        candidate, reason=f"passed promotion gates (run {context.run.run_id})"
    )
    for repair in model_store.repairs:
        context.log.warning("repaired the model store: %s", repair)
    context.log.info(
        "promoted %s (previous champion: %s)",
        candidate,
        previous["version"] if previous else "none",
    )
    return dg.MaterializeResult(
        metadata={
            "version": candidate,
            "previous_champion": previous["version"] if previous else "none",
            "cv_rmse": manifest["cv_metrics"]["rmse_mean"],
            "artifact_path": dg.MetadataValue.path(manifest["path"]),
            "store_repairs": dg.MetadataValue.md(
                "\n".join(f"- {r}" for r in model_store.repairs) or "none"
            ),
        }
    )
