"""The tables `cv_report` shows: per-fold rows with mean and std, and the model against its
baselines (RMSE, MAE, precision/recall/NDCG@10 of every list)."""

from __future__ import annotations

import pandas as pd

__all__ = ["RANKING_METRICS", "RANKING_NAMES", "comparison_table", "summary_rows"]


# Figures users compare model vs baselines on: (row label, rmse col, mae col, ranking prefix).
_COMPARISON = (
    ("shipped list (the better of blend and EASE on validation)", None, None, "shipped"),
    ("EASE ranking model (λ chosen on validation)", None, None, "ease"),
    ("SVD, blend ranking", "rmse", "mae", "blend"),
    ("SVD, ranked by predicted rating", "rmse", "mae", "svd"),
    ("BaselineOnly (mu + bu + bi)", "baseline_rmse", "baseline_mae", None),
    ("global mean", "global_mean_rmse", "global_mean_mae", None),
    ("most popular", None, None, "popular"),
)


RANKING_METRICS = ("precision", "recall", "ndcg")


# Metadata names for the ranking columns, e.g. shipped_ndcg -> ndcg_at_10.
RANKING_NAMES = {
    "shipped": "",
    "blend": "_blend",
    "ease": "_ease",
    "svd": "_svd_only",
    "popular": "_most_popular",
}


def summary_rows(folds: pd.DataFrame) -> pd.DataFrame:
    metrics = [c for c in folds.columns if c != "fold"]
    table = folds[["fold", *metrics]].astype({"fold": str})
    mean = {"fold": "mean", **{m: float(folds[m].mean()) for m in metrics}}
    std = {"fold": "std", **{m: float(folds[m].std(ddof=0)) for m in metrics}}
    return pd.concat([table, pd.DataFrame([mean, std])], ignore_index=True)


def comparison_table(folds: pd.DataFrame) -> pd.DataFrame:
    """Model vs baselines, means over folds (NaN where a figure does not apply)."""
    rows = []
    for label, rmse, mae, ranking in _COMPARISON:
        if ranking and f"{ranking}_ndcg" not in folds:
            continue  # e.g. no EASE columns (CV without the ranking model)
        row = {
            "model": label,
            "RMSE": float(folds[rmse].mean()) if rmse else float("nan"),
            "MAE": float(folds[mae].mean()) if mae else float("nan"),
        }
        for metric in RANKING_METRICS:
            col = f"{ranking}_{metric}"
            value = float(folds[col].mean()) if ranking and col in folds else float("nan")
            row[f"{metric}@10"] = value
        rows.append(row)
    return pd.DataFrame(rows)
