"""The promotion gates on `model_artifact`, in one step (`model_artifact_gates`); blocking,
ERROR severity: a candidate that fails one is never promoted."""

from collections.abc import Iterator, Mapping

import dagster as dg
import pandas as pd

from recsys_assets.asset_keys import FALLBACK_PREDICTIONS
from recsys_assets.assets.artifact import model_artifact
from recsys_assets.assets.config import PredictionsConfig
from recsys_assets.assets.predictions import gates_publish_the_shelf, write_popular_shelf
from recsys_assets.assets.ratings import ratings_df
from recsys_assets.assets.retries import db_retry_policy, retry_only_transient_db_errors
from recsys_assets.checks.results import ERROR, WARN, as_spec
from recsys_assets.db import RatingsStore
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets.ml.selection.sample import SampleSize


class PromotionConfig(dg.Config):
    """How much worse than the champion (CV RMSE) a candidate may be and still be promoted."""

    rmse_tolerance: float = 0.01


class RankingGateConfig(dg.Config):
    """How much lower than the champion's a candidate's shipped-list NDCG@10 may be."""

    ndcg_tolerance: float = 0.01


class GatesConfig(PromotionConfig, RankingGateConfig):
    """The gates' tolerances (`ops.model_artifact_gates.config`)."""


def _cv(manifest: dict, key: str) -> float | None:
    value = (manifest.get("cv_metrics") or {}).get(key)
    return float(value) if value is not None else None


def _evaluated(manifest: dict) -> tuple[tuple, str]:
    """The scope of a manifest's CV figures (`SampleSize.scope`) and its description; a
    manifest from before the evaluation budget was evaluated on every rating."""
    size = SampleSize.of_record(manifest.get("evaluation"))
    if size is None:
        return ("all",), "every rating"
    return size.scope(), size.describe()


def _not_comparable(
    model_artifact: dict, champion: dict, measure: str
) -> dg.AssetCheckResult | None:
    """A warning instead of a comparison when the candidate's CV figures and the champion's
    recorded ones were measured on different scopes (every rating vs a sample, or samples of
    another cap): a model fitted on a sample scores lower than one on every rating."""
    (mine, mine_text), (theirs, theirs_text) = _evaluated(model_artifact), _evaluated(champion)
    if mine == theirs:
        return None
    return dg.AssetCheckResult(
        passed=False,
        severity=WARN,
        description=f"{measure} not compared: the candidate was evaluated on {mine_text}, "
        f"champion {champion['version']} on {theirs_text}",
        metadata={
            "version": str(model_artifact.get("version")),
            "champion_version": champion["version"],
            "compared": False,
        },
    )


def _no_candidate_rmse(model_artifact: dict) -> dg.AssetCheckResult:
    # A candidate without a CV RMSE was never evaluated: it cannot pass a gate.
    return dg.AssetCheckResult(
        passed=False,
        severity=ERROR,
        description=f"candidate {model_artifact.get('version')} has no CV RMSE in its manifest "
        "(cv_metrics.rmse_mean): not evaluated, not promoted",
        metadata={"version": str(model_artifact.get("version"))},
    )


# What the gates' step reads besides the candidate: the ratings for the most-popular shelf it
# writes when a gate fails and there is no champion.
SHELF_INPUTS = [ratings_df]

GATES = [
    dg.AssetCheckSpec(
        "beats_baseline",
        asset=model_artifact,
        blocking=True,
        additional_deps=SHELF_INPUTS,
        description="Gate: the candidate's CV RMSE is lower than BaselineOnly's on the same folds.",
    ),
    dg.AssetCheckSpec(
        "not_worse_than_champion",
        asset=model_artifact,
        blocking=True,
        additional_deps=SHELF_INPUTS,
        description="Gate: the candidate is not worse than the champion by more than "
        "rmse_tolerance, both measured on today's ratings (the first model passes).",
    ),
    dg.AssetCheckSpec(
        "shipped_ranking_not_worse_than_champion",
        asset=model_artifact,
        blocking=True,
        additional_deps=SHELF_INPUTS,
        description="Gate: the CV NDCG@10 of the candidate's shipped list (EASE or the SVD "
        "blend) is not lower than the champion's by more than ndcg_tolerance (the first model "
        "passes).",
    ),
]


@dg.multi_asset_check(specs=GATES, retry_policy=db_retry_policy())
def model_artifact_gates(
    context: dg.AssetCheckExecutionContext,
    config: GatesConfig,
    model_artifact: dict,
    ratings_df: pd.DataFrame,
    model_store: dg.ResourceParam[ArtifactStore],
    ratings_db: dg.ResourceParam[RatingsStore],
) -> Iterator[dg.AssetCheckResult]:
    """The promotion gates, in one step (config: `rmse_tolerance`, `ndcg_tolerance`).

    When one fails and there is no champion, users would have no suggestions: if this run's
    `fallback_predictions` left the most-popular shelf to the gates, it is written here,
    after the results and before the step ends (the skipped steps come after).
    """
    baseline, champion, ranking = GATES
    results = [
        as_spec(baseline, beats_baseline(model_artifact)),
        as_spec(champion, not_worse_than_champion(config, model_artifact, model_store)),
        as_spec(
            ranking, shipped_ranking_not_worse_than_champion(config, model_artifact, model_store)
        ),
    ]
    yield from results
    blocked = any(not r.passed and r.severity == ERROR for r in results)
    if not blocked or model_store.latest_manifest() is not None:
        return
    if not gates_publish_the_shelf(context.instance, context.run.run_id):
        return  # this run's fallback_predictions writes the shelf itself
    step = context.op_execution_context
    top_n = _fallback_config(step.run_config).top_n
    with retry_only_transient_db_errors(step):
        metadata = write_popular_shelf(context.log, top_n, ratings_df, ratings_db)
    step.log_event(
        dg.AssetMaterialization(
            FALLBACK_PREDICTIONS,
            description="written by model_artifact_gates: a gate failed and there is no "
            "champion yet",
            metadata={**metadata, "written_by": "model_artifact_gates"},
        )
    )


def _fallback_config(run_config: Mapping[str, object]) -> PredictionsConfig:
    """`fallback_predictions`' config in this run, so the shelf is the one it would write."""
    ops = run_config.get("ops") or {}
    return PredictionsConfig(**((ops.get(FALLBACK_PREDICTIONS.path[-1]) or {}).get("config") or {}))


def beats_baseline(model_artifact: dict) -> dg.AssetCheckResult:
    rmse, baseline = _cv(model_artifact, "rmse_mean"), _cv(model_artifact, "baseline_rmse_mean")
    if baseline is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=ERROR,
            description="the candidate's manifest has no BaselineOnly RMSE to compare with",
        )
    if rmse is None:
        return _no_candidate_rmse(model_artifact)
    passed = rmse < baseline
    return dg.AssetCheckResult(
        passed=passed,
        severity=ERROR,
        description=f"CV RMSE {rmse:.4f} vs BaselineOnly {baseline:.4f}: "
        + ("better, may be promoted" if passed else "not better, not promoted"),
        metadata={
            "version": model_artifact["version"],
            "cv_rmse": rmse,
            "baseline_rmse": baseline,
            "margin": baseline - rmse,
        },
    )


def not_worse_than_champion(
    config: PromotionConfig, model_artifact: dict, model_store: ArtifactStore
) -> dg.AssetCheckResult:
    """With a hyperparameter search, the champion's configuration was one of its candidates:
    fitted on today's training ratings and scored on the same validation ratings as the
    candidate's, so the two RMSEs are on the same data. Without one (tuning fixed), the
    candidate's CV RMSE is compared with the CV RMSE the champion's manifest recorded."""
    rmse = _cv(model_artifact, "rmse_mean")
    if rmse is None:
        return _no_candidate_rmse(model_artifact)
    champion = model_store.latest_manifest()
    if champion is None:
        return dg.AssetCheckResult(
            passed=True,
            description="no champion yet: the first model only has to beat the baseline",
            metadata={
                "version": model_artifact["version"],
                "cv_rmse": _cv(model_artifact, "rmse_mean"),
            },
        )
    search = model_artifact.get("hyperparameter_search") or {}
    same_data = (
        search.get("champion_version") == champion["version"]
        and search.get("champion_validation_rmse") is not None
    )
    if same_data:
        chosen = search.get("chosen_validation_rmse")
        if chosen is None:
            # The search scored the champion but recorded nothing for its own choice: the
            # candidate was not compared on today's data, so it cannot pass.
            return dg.AssetCheckResult(
                passed=False,
                severity=ERROR,
                description=f"candidate {model_artifact.get('version')}'s search recorded "
                f"champion {champion['version']}'s validation RMSE but none for its chosen "
                "configuration (hyperparameter_search.chosen_validation_rmse): not compared, "
                "not promoted",
                metadata={
                    "version": str(model_artifact.get("version")),
                    "champion_version": champion["version"],
                },
            )
        rmse = float(chosen)
        champion_rmse = float(search["champion_validation_rmse"])
        measure = "validation RMSE on today's ratings"
        champion_label = f"champion {champion['version']}'s configuration"
    else:
        unlike = _not_comparable(model_artifact, champion, "CV RMSE")
        if unlike is not None:
            return unlike
        rmse = _cv(model_artifact, "rmse_mean")
        champion_rmse = _cv(champion, "rmse_mean")
        measure = "CV RMSE (the champion's as recorded when it was trained)"
        champion_label = f"champion {champion['version']}"
        if champion_rmse is None:
            return dg.AssetCheckResult(
                passed=True,
                description=f"champion {champion['version']} has no CV RMSE to compare with",
                metadata={"version": model_artifact["version"], "cv_rmse": rmse},
            )
    limit = champion_rmse + config.rmse_tolerance
    passed = rmse <= limit
    verdict = "may be promoted" if passed else f"not promoted, {champion['version']} stays"
    return dg.AssetCheckResult(
        passed=passed,
        severity=ERROR,
        description=f"{measure}: {rmse:.4f} vs {champion_label} {champion_rmse:.4f} "
        f"(+{config.rmse_tolerance} tolerance = {limit:.4f}): {verdict}",
        metadata={
            "version": model_artifact["version"],
            "cv_rmse": _cv(model_artifact, "rmse_mean"),
            "compared_rmse": rmse,
            "same_data": same_data,
            "champion_version": champion["version"],
            "champion_rmse": champion_rmse,
            "rmse_tolerance": config.rmse_tolerance,
            "margin": limit - rmse,
        },
    )


def shipped_ndcg(manifest: dict) -> float | None:
    """CV NDCG@10 of the list a model ships (manifests from before the ranking model shipped
    the blend: its NDCG is the shipped one)."""
    value = _cv(manifest, "shipped_ndcg_mean")
    return value if value is not None else _cv(manifest, "blend_ndcg_mean")


def shipped_ranking_not_worse_than_champion(
    config: RankingGateConfig, model_artifact: dict, model_store: ArtifactStore
) -> dg.AssetCheckResult:
    ndcg = shipped_ndcg(model_artifact)
    ranker = (model_artifact.get("ranking") or {}).get("ranker", "svd")
    champion = model_store.latest_manifest()
    base = {"version": model_artifact["version"], "shipped_list": ranker, "cv_ndcg": ndcg}
    if ndcg is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=ERROR,
            description="the candidate's manifest has no CV NDCG@10 of its shipped list",
            metadata=base,
        )
    if champion is None:
        return dg.AssetCheckResult(
            passed=True, description="no champion yet: nothing to compare with", metadata=base
        )
    unlike = _not_comparable(model_artifact, champion, "CV NDCG@10")
    if unlike is not None:
        return unlike
    champion_ndcg = shipped_ndcg(champion)
    if champion_ndcg is None:
        return dg.AssetCheckResult(
            passed=True,
            description=f"champion {champion['version']} has no CV NDCG@10 to compare with",
            metadata=base,
        )
    floor = champion_ndcg - config.ndcg_tolerance
    passed = ndcg >= floor
    verdict = "may be promoted" if passed else f"not promoted, {champion['version']} stays"
    return dg.AssetCheckResult(
        passed=passed,
        severity=ERROR,
        description=f"shipped list ({ranker}) CV NDCG@10 {ndcg:.4f} vs champion "
        f"{champion['version']} {champion_ndcg:.4f} (-{config.ndcg_tolerance} tolerance = "
        f"{floor:.4f}): {verdict}",
        metadata={
            **base,
            "champion_version": champion["version"],
            "champion_shipped_list": (champion.get("ranking") or {}).get("ranker", "svd"),
            "champion_ndcg": champion_ndcg,
            "ndcg_tolerance": config.ndcg_tolerance,
            "margin": ndcg - floor,
        },
    )
