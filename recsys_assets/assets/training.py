"""`surprise_dataset`, `cv_report` and `svd_model`: the Surprise half of the graph."""

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pandas as pd
from surprise import SVD, Dataset, Reader

from recsys_assets.assets.config import CVConfig, DatasetConfig
from recsys_assets.assets.cv_tables import (
    RANKING_METRICS,
    RANKING_NAMES,
    comparison_table,
    summary_rows,
)
from recsys_assets.assets.evaluation_sample import sample_metadata
from recsys_assets.assets.metadata import markdown_table, peak_rss_mb
from recsys_assets.ml.datasets import CompactDataset
from recsys_assets.ml.ranking import SOURCE_EASE, RankingPolicy
from recsys_assets.ml.selection.cross_validation import CVSettings, cross_validate_svd
from recsys_assets.ml.selection.cv_result import CVResult
from recsys_assets.ml.selection.list_choice import (
    DEFAULT_EASE,
    EaseSettings,
    ListChoice,
    choose_on_holdout,
)
from recsys_assets.ml.selection.sample import EvaluationSample, SampleSize
from recsys_assets.ml.selection.search_result import SearchResult
from recsys_assets.ml.training import SVDParams, fit_svd, training_error
from recsys_assets.resources.executor_layout import ExecutorLayout

SURPRISE_COLUMNS = ["user_id", "movie_id", "rating"]


@dg.asset(group_name="training", compute_kind="surprise")
def surprise_dataset(
    context: dg.AssetExecutionContext, config: DatasetConfig, ratings_df: pd.DataFrame
) -> dg.Output[Dataset]:
    """`surprise.Dataset` of the cleaned ratings; Reader scale from the data unless configured."""
    low = config.scale_min if config.scale_min is not None else float(ratings_df["rating"].min())
    high = config.scale_max if config.scale_max is not None else float(ratings_df["rating"].max())
    if low >= high:
        raise dg.Failure(
            f"rating scale ({low}, {high}) is empty: all ratings have the same value or the "
            "configured scale_min/scale_max are reversed"
        )
    start = time.perf_counter()
    # A surprise Dataset stored as arrays: the same ratings and folds as
    # Dataset.load_from_df, without ~150 bytes of Python objects per rating (ml/datasets.py).
    dataset = CompactDataset.from_df(ratings_df[SURPRISE_COLUMNS], Reader(rating_scale=(low, high)))
    seconds = time.perf_counter() - start
    context.log.info("built Surprise dataset of %d ratings in %.2fs", len(ratings_df), seconds)
    return dg.Output(
        dataset,
        metadata={
            "ratings": len(ratings_df),
            "rating_scale": f"{low:g}–{high:g}",
            "scale_min": low,
            "scale_max": high,
            "seconds": seconds,
            "peak_rss_mb": peak_rss_mb(),
        },
    )


@dataclass(frozen=True)
class FoldTask:
    """One CV step's share of the folds, with everything it needs besides the dataset."""

    evaluated: SampleSize
    folds: tuple[int, ...]
    n_folds: int
    seed: int
    params: SVDParams
    n_jobs: int | None
    min_user_ratings: int
    ranking_users: int = 0
    ease: EaseSettings | None = DEFAULT_EASE
    choice: ListChoice | None = None  # lists chosen on the search's V for every fold


@dg.op(out=dg.DynamicOut(FoldTask))
def cv_fold_plan(
    context: dg.OpExecutionContext,
    config: CVConfig,
    evaluation_sample: EvaluationSample,
    svd_hyperparameters: SearchResult,
    executor_layout: ExecutorLayout,
) -> Iterator[dg.DynamicOutput[FoldTask]]:
    """Split the k folds into steps: one per fold under Celery, else all in one step."""
    params = svd_hyperparameters.params
    dataset = evaluation_sample.dataset
    # The search's validation ratings are in every fold's training part, never a test fold.
    n_ratings = len(dataset) - svd_hyperparameters.holdout.size
    if n_ratings < config.n_folds * 2:
        raise dg.Failure(
            f"{n_ratings} ratings are too few for {config.n_folds}-fold cross-validation"
        )
    if config.folds_per_step:
        per_step = config.folds_per_step
    else:
        per_step = 1 if executor_layout.spreads_steps() else config.n_folds
    context.log.info("%d folds in steps of %d", config.n_folds, per_step)
    context.log.info("cross-validation on %s", evaluation_sample.size.describe())
    choice = _choice_on_holdout(context, config, dataset, svd_hyperparameters)
    for first in range(1, config.n_folds + 1, per_step):
        folds = tuple(range(first, min(first + per_step, config.n_folds + 1)))
        task = FoldTask(
            evaluation_sample.size,
            folds,
            config.n_folds,
            params.random_state,
            params,
            config.n_jobs or None,
            config.min_user_ratings,
            config.ranking_users,
            config.ease_settings(),
            choice,
        )
        yield dg.DynamicOutput(task, mapping_key="folds_" + "_".join(map(str, folds)))


def _choice_on_holdout(
    context: dg.OpExecutionContext,
    config: CVConfig,
    dataset: Dataset,
    search: SearchResult,
) -> ListChoice | None:
    """Blend weights, EASE's λ and the shipped list, chosen once on the search's validation
    ratings V with its fit of the chosen configuration on every other rating; None when the
    hyperparameters were fixed (each fold then chooses on an inner split of its own)."""
    if search.factors is None or search.holdout.size == 0:
        return None
    start = time.perf_counter()
    choice = choose_on_holdout(
        dataset.rating_arrays(),
        search.holdout,
        search.factors,
        RankingPolicy(min_user_ratings=config.min_user_ratings),
        config.ease_settings(),
        max_users=config.ranking_users or None,
        seed=search.params.random_state,
    )
    seconds = time.perf_counter() - start
    context.log.info(
        "lists chosen on the search's %d validation ratings in %.1fs: blend NDCG@10 %.4f "
        "(taste %.2f, rating %.2f)%s; ships %s",
        search.holdout.size,
        seconds,
        choice.blend_ndcg,
        choice.policy.taste_weight,
        choice.policy.rating_weight,
        f", EASE NDCG@10 {choice.ease_ndcg:.4f} (λ={choice.ease_lambda:g})"
        if choice.ease_lambda is not None
        else "",
        "EASE" if choice.ranker == SOURCE_EASE else "the blend",
    )
    return choice


@dg.op
def cv_fold(
    context: dg.OpExecutionContext,
    task: FoldTask,
    evaluation_sample: EvaluationSample,
    svd_hyperparameters: SearchResult,
) -> dict:
    """Fit and evaluate this step's folds; their fits and weight selections run as forked tasks."""
    start = time.perf_counter()
    # The rows of the full run (`ml.selection.cross_validation.cross_validate_svd` restricted to
    # these folds): fold fit, baselines, ranking metrics, blend weights from inner models
    # without the fold.
    settings = CVSettings(
        task.n_folds, task.seed, task.n_jobs, task.min_user_ratings, task.ranking_users, task.ease
    )
    table = cross_validate_svd(
        evaluation_sample.dataset,
        task.params,
        settings,
        folds=task.folds,
        holdout=svd_hyperparameters.holdout,
        choice=task.choice,
        log=context.log,
    )
    rows = table.to_dict("records")
    seconds = time.perf_counter() - start
    # Where the step ran: the Celery integration test checks these against its worker.
    where = {"pid": os.getpid(), "ppid": os.getppid(), "host": socket.gethostname()}
    context.add_output_metadata(
        {
            "folds": ", ".join(map(str, task.folds)),
            "seconds": seconds,
            "peak_rss_mb": peak_rss_mb(),
            **{f"fold_{r['fold']}_rmse": float(r["rmse"]) for r in rows},
            **where,
        }
    )
    return {"task": task, "rows": rows, "seconds": seconds, **where}


@dg.op
def cv_summary(context: dg.OpExecutionContext, results: list[dict]) -> dg.Output[CVResult]:
    """Collect the fold rows into the CV's outcome: the folds and the shipped ranking, EASE's
    λ and the SVD parameters they choose for the model fitted on every rating."""
    task: FoldTask = results[0]["task"]
    folds = pd.DataFrame([row for result in results for row in result["rows"]])
    if len(folds) != task.n_folds:  # pragma: no cover - a lost step fails the run first
        raise dg.Failure(f"expected {task.n_folds} fold results, got {len(folds)}")
    cv = CVResult.of_folds(folds, task.params, task.min_user_ratings, task.ease, task.evaluated)
    folds, policy = cv.folds, cv.policy
    ranking_meta = {
        f"{metric}_at_10{suffix}": float(folds[f"{prefix}_{metric}"].mean())
        for prefix, suffix in RANKING_NAMES.items()
        for metric in RANKING_METRICS
        if f"{prefix}_{metric}" in folds
    }
    context.log.info(
        "cv: RMSE %.4f (BaselineOnly %.4f, global mean %.4f); NDCG@10 shipped %.4f "
        "(blend %.4f, EASE %.4f), svd-only %.4f, most-popular %.4f; the model ships %s",
        folds["rmse"].mean(),
        folds["baseline_rmse"].mean(),
        folds["global_mean_rmse"].mean(),
        ranking_meta["ndcg_at_10"],
        ranking_meta["ndcg_at_10_blend"],
        ranking_meta.get("ndcg_at_10_ease", float("nan")),
        ranking_meta["ndcg_at_10_svd_only"],
        ranking_meta["ndcg_at_10_most_popular"],
        "EASE" if policy.ranker == SOURCE_EASE else "the blend",
    )
    return dg.Output(cv, metadata=_cv_metadata(cv, ranking_meta, task, results))


def _cv_metadata(
    cv: CVResult, ranking_meta: dict[str, float], task: FoldTask, results: list[dict]
) -> dict:
    """What the UI shows of the CV: fold means as floats, the tables as markdown."""
    folds = cv.folds
    validation_meta = {
        f"validation_ndcg_at_10_{name}": float(folds[f"{name}_validation_ndcg"].mean())
        for name in ("blend", "ease")
        if f"{name}_validation_ndcg" in folds
    }
    return {
        "rmse_mean": float(folds["rmse"].mean()),
        "rmse_std": float(folds["rmse"].std(ddof=0)),
        "mae_mean": float(folds["mae"].mean()),
        "mae_std": float(folds["mae"].std(ddof=0)),
        "baseline_rmse_mean": float(folds["baseline_rmse"].mean()),
        "baseline_mae_mean": float(folds["baseline_mae"].mean()),
        "global_mean_rmse_mean": float(folds["global_mean_rmse"].mean()),
        "global_mean_mae_mean": float(folds["global_mean_mae"].mean()),
        **ranking_meta,
        **validation_meta,
        "shipped_list": cv.policy.ranker,
        **({"ease_lambda": float(cv.ease.lam)} if cv.ease is not None else {}),
        **(
            {"ease_lambda_validated": float(cv.ease.validated_lam)}
            if cv.ease is not None and cv.ease.validated_lam is not None
            else {}
        ),
        **sample_metadata(task.evaluated),
        "ranking_users": dg.MetadataValue.text(
            f"a seeded sample of at most {task.ranking_users} users"
            if task.ranking_users
            else "every user"
        ),
        "fit_time_mean": float(folds["fit_time"].mean()),
        "n_folds": task.n_folds,
        "fold_steps": len(results),
        # Sum of the fold steps' wall times (they may have overlapped).
        "fold_step_seconds": float(sum(r["seconds"] for r in results)),
        "model_vs_baselines": dg.MetadataValue.md(markdown_table(comparison_table(folds))),
        "folds": dg.MetadataValue.md(markdown_table(summary_rows(folds))),
        "hyperparameters": dg.MetadataValue.json(cv.params.as_dict()),
        "fit_engine": cv.params.engine,
        "ranking_policy": dg.MetadataValue.json(cv.policy.as_dict()),
    }


@dg.config_mapping
def _cv_config(config: CVConfig) -> dict:
    # Users configure the asset (`ops.cv_report.config`); the plan op holds it.
    return {"cv_fold_plan": {"config": config.model_dump()}}


@dg.graph_asset(group_name="training", config=_cv_config)
def cv_report(evaluation_sample: EvaluationSample, svd_hyperparameters: SearchResult) -> CVResult:
    """Seeded k-fold CV of the SVD, with baselines and ranking quality on the same folds, on
    `evaluation_sample` (every rating up to the evaluation budget; metadata `sample_*`).

    Per fold: RMSE/MAE of the SVD, the global mean and `BaselineOnly`; precision/recall/NDCG@10
    of the shipped top-10 (popularity/taste blend), the SVD-estimate-only top-10 and a
    most-popular top-10 (relevant = the user's held-out movies, see `ml.ranking`).

    The SVD is the configuration `svd_hyperparameters` chose. When it was searched, its
    validation ratings are in the training part of every fold and the k test folds partition
    the other ratings (`ml.selection.folds.fold_split`): nothing reported here was used to choose.

    Fanned out (`DynamicOut`) so the multiprocess executor runs folds side by side and the
    Celery executor runs them on workers; collected into one `CVResult`: the fold table, the
    shipped ranking policy, the EASE model to fit and the SVD's parameters.
    """
    tasks = cv_fold_plan(evaluation_sample, svd_hyperparameters)
    results = tasks.map(lambda task: cv_fold(task, evaluation_sample, svd_hyperparameters))
    return cv_summary(results.collect())


@dg.asset(group_name="training", compute_kind="surprise")
def svd_model(
    context: dg.AssetExecutionContext, surprise_dataset: Dataset, svd_hyperparameters: SearchResult
) -> dg.Output[SVD]:
    """`surprise.SVD` of the chosen hyperparameters fitted on every rating (the validation
    ratings too); its error here is training error, not a test."""
    params = svd_hyperparameters.params
    start = time.perf_counter()
    trainset = surprise_dataset.build_full_trainset()
    model = fit_svd(trainset, params, log=context.log)
    fit_seconds = time.perf_counter() - start
    train_rmse, train_mae = training_error(model, trainset)
    context.log.info(
        "fitted SVD on %d ratings in %.2fs with the %s engine "
        "(training RMSE %.4f — not a held-out estimate)",
        trainset.n_ratings,
        fit_seconds,
        params.engine,
        train_rmse,
    )
    return dg.Output(
        model,
        metadata={
            "fit_seconds": fit_seconds,
            "training_rmse": train_rmse,
            "training_mae": train_mae,
            "note": "training_rmse/training_mae are measured on the training data itself; "
            "see cv_report for held-out error",
            "ratings": trainset.n_ratings,
            "peak_rss_mb": peak_rss_mb(),
            "users": trainset.n_users,
            "movies": trainset.n_items,
            "hyperparameters": dg.MetadataValue.json(params.as_dict()),
            "fit_engine": params.engine,
        },
    )
