"""`surprise_dataset`, `cv_report` and `svd_model`: the Surprise half of the graph."""

import time

import dagster as dg
import pandas as pd
from surprise import SVD, Dataset, Reader

from recsys_assets.assets.config import CVConfig, DatasetConfig, SVDConfig
from recsys_assets.assets.metadata import markdown_table
from recsys_assets.ml.ranking import RankingPolicy
from recsys_assets.ml.training import (
    SVDParams,
    cross_validate_svd,
    fit_svd,
    training_error,
)

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
    dataset = Dataset.load_from_df(ratings_df[SURPRISE_COLUMNS], Reader(rating_scale=(low, high)))
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
        },
    )


# Figures users compare model vs baselines on: (row label, rmse col, mae col, ranking prefix).
_COMPARISON = (
    ("SVD, shipped ranking (blend)", "rmse", "mae", "blend"),
    ("SVD, ranked by predicted rating", "rmse", "mae", "svd"),
    ("BaselineOnly (mu + bu + bi)", "baseline_rmse", "baseline_mae", None),
    ("global mean", "global_mean_rmse", "global_mean_mae", None),
    ("most popular", None, None, "popular"),
)
_RANKING_METRICS = ("precision", "recall", "ndcg")
# Metadata names for the ranking columns, e.g. blend_ndcg -> ndcg_at_10.
_RANKING_NAMES = {"blend": "", "svd": "_svd_only", "popular": "_most_popular"}


def _summary_rows(folds: pd.DataFrame) -> pd.DataFrame:
    metrics = [c for c in folds.columns if c != "fold"]
    table = folds[["fold", *metrics]].astype({"fold": str})
    mean = {"fold": "mean", **{m: float(folds[m].mean()) for m in metrics}}
    std = {"fold": "std", **{m: float(folds[m].std(ddof=0)) for m in metrics}}
    return pd.concat([table, pd.DataFrame([mean, std])], ignore_index=True)


def comparison_table(folds: pd.DataFrame) -> pd.DataFrame:
    """Model vs baselines, means over folds (NaN where a figure does not apply)."""
    rows = []
    for label, rmse, mae, ranking in _COMPARISON:
        row = {
            "model": label,
            "RMSE": float(folds[rmse].mean()) if rmse else float("nan"),
            "MAE": float(folds[mae].mean()) if mae else float("nan"),
        }
        for metric in _RANKING_METRICS:
            col = f"{ranking}_{metric}"
            value = float(folds[col].mean()) if ranking and col in folds else float("nan")
            row[f"{metric}@10"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def final_ranking_policy(folds: pd.DataFrame, min_user_ratings: int) -> RankingPolicy:
    """Blend weights for the model fitted on everything: the median of the per-fold choices.

    Each fold chose its weights on a validation split of its own training ratings, so this
    never looked at a test fold either.
    """
    if "taste_weight" not in folds:
        return RankingPolicy(min_user_ratings=min_user_ratings)
    return RankingPolicy(
        popularity_weight=1.0,
        taste_weight=float(folds["taste_weight"].median()),
        rating_weight=float(folds["rating_weight"].median()),
        min_user_ratings=min_user_ratings,
    )


@dg.asset(group_name="training", compute_kind="surprise")
def cv_report(
    context: dg.AssetExecutionContext, config: CVConfig, surprise_dataset: Dataset
) -> dg.Output[pd.DataFrame]:
    """Seeded k-fold CV of the SVD, with baselines and ranking quality on the same folds.

    Per fold: RMSE/MAE of the SVD, the global mean and `BaselineOnly`; precision/recall/NDCG@10
    of the shipped top-10 (popularity/taste blend), the SVD-estimate-only top-10 and a
    most-popular top-10 (relevant = the user's held-out movies, see `ml.ranking`).
    """
    params = config.params()
    n_ratings = len(surprise_dataset.raw_ratings)
    if n_ratings < config.n_folds * 2:
        raise dg.Failure(
            f"{n_ratings} ratings are too few for {config.n_folds}-fold cross-validation"
        )
    start = time.perf_counter()
    folds = cross_validate_svd(
        surprise_dataset,
        params,
        n_folds=config.n_folds,
        seed=params.random_state,
        n_jobs=config.n_jobs or None,
        log=context.log,
        min_user_ratings=config.min_user_ratings,
    )
    seconds = time.perf_counter() - start
    report = _summary_rows(folds)
    policy = final_ranking_policy(folds, config.min_user_ratings)
    report.attrs["svd_params"] = params.as_dict()
    report.attrs["n_folds"] = config.n_folds
    report.attrs["ranking"] = policy.as_dict()
    comparison = comparison_table(folds)
    ranking_meta = {
        f"{metric}_at_10{suffix}": float(folds[f"{prefix}_{metric}"].mean())
        for prefix, suffix in _RANKING_NAMES.items()
        for metric in _RANKING_METRICS
    }
    context.log.info(
        "cv: RMSE %.4f (BaselineOnly %.4f, global mean %.4f); NDCG@10 shipped %.4f, "
        "svd-only %.4f, most-popular %.4f",
        folds["rmse"].mean(),
        folds["baseline_rmse"].mean(),
        folds["global_mean_rmse"].mean(),
        ranking_meta["ndcg_at_10"],
        ranking_meta["ndcg_at_10_svd_only"],
        ranking_meta["ndcg_at_10_most_popular"],
    )
    return dg.Output(
        report,
        metadata={
            "rmse_mean": float(folds["rmse"].mean()),
            "rmse_std": float(folds["rmse"].std(ddof=0)),
            "mae_mean": float(folds["mae"].mean()),
            "mae_std": float(folds["mae"].std(ddof=0)),
            "baseline_rmse_mean": float(folds["baseline_rmse"].mean()),
            "baseline_mae_mean": float(folds["baseline_mae"].mean()),
            "global_mean_rmse_mean": float(folds["global_mean_rmse"].mean()),
            "global_mean_mae_mean": float(folds["global_mean_mae"].mean()),
            **ranking_meta,
            "fit_time_mean": float(folds["fit_time"].mean()),
            "n_folds": config.n_folds,
            "seconds": seconds,
            "model_vs_baselines": dg.MetadataValue.md(markdown_table(comparison)),
            "folds": dg.MetadataValue.md(markdown_table(report)),
            "hyperparameters": dg.MetadataValue.json(params.as_dict()),
            "ranking_policy": dg.MetadataValue.json(policy.as_dict()),
        },
    )


def svd_params_of(model: SVD) -> SVDParams:
    """The hyperparameters a fitted SVD was built with (lr_all/reg_all set all four rates)."""
    return SVDParams(
        n_epochs=model.n_epochs,
        lr_all=model.lr_bu,
        reg_all=model.reg_bu,
        n_factors=model.n_factors,
        random_state=model.random_state,
    )


@dg.asset(group_name="training", compute_kind="surprise")
def svd_model(
    context: dg.AssetExecutionContext, config: SVDConfig, surprise_dataset: Dataset
) -> dg.Output[SVD]:
    """`surprise.SVD` fitted on every rating; its error here is training error, not a test."""
    params = config.params()
    start = time.perf_counter()
    trainset = surprise_dataset.build_full_trainset()
    model = fit_svd(trainset, params, log=context.log)
    fit_seconds = time.perf_counter() - start
    train_rmse, train_mae = training_error(model, trainset)
    context.log.info(
        "fitted SVD on %d ratings in %.2fs (training RMSE %.4f — not a held-out estimate)",
        trainset.n_ratings,
        fit_seconds,
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
            "users": trainset.n_users,
            "movies": trainset.n_items,
            "hyperparameters": dg.MetadataValue.json(params.as_dict()),
        },
    )
