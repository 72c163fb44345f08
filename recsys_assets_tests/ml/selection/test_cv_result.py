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


def test_the_blend_ships_otherwise_and_no_ease_is_fitted_then():
    # The blend ships: EASE is not fitted on every rating (nobody would be served it).
    result = CVResult.of_folds(_folds([0.1, 0.1, 0.3]), SVDParams(), 5, EaseSettings())
    assert result.policy.ranker == SOURCE_SVD and result.ease is None
    no_ease = _folds([0.1, 0.1, 0.3]).drop(columns=["ease_validation_ndcg", "ease_lambda"])
    result = CVResult.of_folds(no_ease, SVDParams(), 5, None)
    assert result.policy.ranker == SOURCE_SVD and result.ease is None


def test_lambda_chosen_on_a_sample_is_scaled_to_every_user():
    """XᵀX grows with the users: λ chosen on a quarter of them is four times larger for the
    EASE fitted on all of them; not sampled, λ is the chosen one exactly."""
    from recsys_assets.ml.selection.sample import SampleSize

    settings = EaseSettings(lambdas=(100.0, 500.0, 1000.0), max_items=50, min_item_ratings=2)
    quarter = SampleSize(2500, 42, 25, 2400, 100, 10_000)
    result = CVResult.of_folds(_folds([0.3, 0.1, 0.3]), SVDParams(), 5, settings, quarter)
    assert result.ease == EaseSpec(2000.0, 50, 2, validated_lam=500.0)
    assert result.evaluated == quarter
    whole = SampleSize(1_000_000, 42, 100, 10_000, 100, 10_000)
    result = CVResult.of_folds(_folds([0.3, 0.1, 0.3]), SVDParams(), 5, settings, whole)
    assert result.ease == EaseSpec(500.0, 50, 2) and result.ease.validated_lam is None
