"""`recsys run`'s summary lines of the cross-validation: what was evaluated, which list ships."""

import pandas as pd

from recsys_assets.cli.summary import _cv_lines
from recsys_assets.ml.ranking import RankingPolicy
from recsys_assets.ml.selection.cv_result import CVResult
from recsys_assets.ml.selection.sample import SampleSize
from recsys_assets.ml.training import SVDParams


def _cv(ease_in_folds: bool) -> CVResult:
    folds = pd.DataFrame(
        {
            "fold": [1, 2],
            "rmse": [0.9, 0.92],
            "mae": [0.7, 0.72],
            "baseline_rmse": [0.95, 0.95],
            "shipped_ndcg": [0.30, 0.32],
            "blend_ndcg": [0.30, 0.32],
            "svd_ndcg": [0.1, 0.1],
            "popular_ndcg": [0.2, 0.2],
            "ease_validation_ndcg": [0.25, 0.25],
            "blend_validation_ndcg": [0.27, 0.29],
            **({"ease_ndcg": [0.28, 0.28]} if ease_in_folds else {}),
        }
    )
    sample = SampleSize(1_000, 42, 60, 900, 120, 2_000)
    return CVResult(folds, RankingPolicy(), None, SVDParams(), sample)


def test_the_lines_say_what_was_evaluated_and_never_print_nan():
    evaluated, cv, ranking = _cv_lines(_cv(ease_in_folds=False))
    assert evaluated == (
        "evaluated    on a sample of 60 of 120 users (900 of 2,000 ratings; cap 1,000, seed 42)"
    )
    assert cv.startswith("cv 2-fold    RMSE 0.9100")
    # The folds fitted no EASE (the blend ships): the validation figures that decided it.
    assert "EASE not shipped: validation NDCG@10 0.2500 vs the blend's 0.2800" in ranking
    assert "nan" not in ranking
    ranking = _cv_lines(_cv(ease_in_folds=True))[2]
    assert "EASE 0.2800, blend 0.3100" in ranking
