"""`surprise_dataset`, `cv_report` and `svd_model`: the Surprise half of the graph."""

import time

import dagster as dg
import pandas as pd
from surprise import SVD, Dataset, Reader

from recsys_assets.assets.config import CVConfig, DatasetConfig, SVDConfig
from recsys_assets.assets.metadata import markdown_table
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


def _summary_rows(folds: pd.DataFrame) -> pd.DataFrame:
    metrics = ["rmse", "mae", "fit_time", "test_time"]
    table = folds[["fold", *metrics]].astype({"fold": str})
    mean = {"fold": "mean", **{m: float(folds[m].mean()) for m in metrics}}
    std = {"fold": "std", **{m: float(folds[m].std(ddof=0)) for m in metrics}}
    return pd.concat([table, pd.DataFrame([mean, std])], ignore_index=True)


@dg.asset(group_name="training", compute_kind="surprise")
def cv_report(
    context: dg.AssetExecutionContext, config: CVConfig, surprise_dataset: Dataset
) -> dg.Output[pd.DataFrame]:
    """Seeded k-fold cross-validation of the SVD: per-fold RMSE, MAE, fit and test time."""
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
    )
    seconds = time.perf_counter() - start
    report = _summary_rows(folds)
    report.attrs["svd_params"] = params.as_dict()
    report.attrs["n_folds"] = config.n_folds
    return dg.Output(
        report,
        metadata={
            "rmse_mean": float(folds["rmse"].mean()),
            "rmse_std": float(folds["rmse"].std(ddof=0)),
            "mae_mean": float(folds["mae"].mean()),
            "mae_std": float(folds["mae"].std(ddof=0)),
            "fit_time_mean": float(folds["fit_time"].mean()),
            "n_folds": config.n_folds,
            "seconds": seconds,
            "folds": dg.MetadataValue.md(markdown_table(report)),
            "hyperparameters": dg.MetadataValue.json(params.as_dict()),
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
