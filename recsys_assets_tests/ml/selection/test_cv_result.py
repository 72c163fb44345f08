"""`CVResult`: what the folds' validation choices ship for the model fitted on every rating."""

import pandas as pd

from recsys_assets.ml.ranking import SOURCE_EASE, SOURCE_SVD, RankingPolicy
from recsys_assets.ml.selection.cv_result import CVResult, EaseSpec
from recsys_assets.ml.selection.list_choice import EaseSettings
from recsys_assets.ml.training import SVDParams


def _folds(ease_ndcg: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "fold": [3, 1, 2],
            "taste_weight": [1.0, 0.5, 0.25],
            "rating_weight": [0.0, 0.1, 0.1],
            "blend_validation_ndcg": [0.2, 0.2, 0.2],
            "ease_validation_ndcg": ease_ndcg,
            "ease_lambda": [100.0, 500.0, 1000.0],
        }
    )


def test_ease_ships_when_its_validation_ndcg_sums_higher():
    settings = EaseSettings(lambdas=(100.0, 500.0, 1000.0), max_items=50, min_item_ratings=2)
    result = CVResult.of_folds(_folds([0.3, 0.1, 0.3]), SVDParams(), 5, settings)
    assert result.folds["fold"].tolist() == [1, 2, 3] and result.n_folds == 3
    assert result.policy == RankingPolicy(1.0, 0.5, 0.1, 5, ranker=SOURCE_EASE)
    assert result.ease == EaseSpec(500.0, 50, 2)  # the median of the folds' λ
    assert result.params == SVDParams()


def test_the_blend_ships_otherwise_and_without_ease_there_is_no_spec():
    result = CVResult.of_folds(_folds([0.1, 0.1, 0.3]), SVDParams(), 5, EaseSettings())
    assert result.policy.ranker == SOURCE_SVD and result.ease is not None
    no_ease = _folds([0.1, 0.1, 0.3]).drop(columns=["ease_validation_ndcg", "ease_lambda"])
    result = CVResult.of_folds(no_ease, SVDParams(), 5, None)
    assert result.policy.ranker == SOURCE_SVD and result.ease is None
