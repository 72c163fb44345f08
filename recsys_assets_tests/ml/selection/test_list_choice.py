import numpy as np
import pytest
from surprise import SVD, Dataset, Reader

from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.ml.arrays import Ratings
from recsys_assets.ml.ease import fit_ease_path
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.ranking.policy import RankingPolicy
from recsys_assets.ml.selection import evaluation
from recsys_assets.ml.selection.evaluation import EvalScope, validation_split
from recsys_assets.ml.selection.list_choice import EaseSettings, choose_lists


def _reference_ease_choice(factors, inner, validations, base, ease, scope):
    """The λ grid as chosen before each λ was scored where it was solved: every λ's model
    fitted, then all of them ranked in one pass (the figures must not move)."""
    models = fit_ease_path(
        inner.users, inner.movies, ease.lambdas, ease.max_items, min_ratings=ease.min_item_ratings
    )
    results = evaluation.ranking_evals(
        factors,
        inner,
        validations,
        [],
        ease_models=models,
        ease_min_user_ratings=base.min_user_ratings,
        scope=scope,
    )
    choices = []
    for per_lambda in results:
        ndcgs = [m["ndcg"] for m in per_lambda]
        best = int(np.argmax(ndcgs))
        choices.append((ease.lambdas[best], ndcgs[best], ndcgs))
    return choices


@pytest.mark.parametrize("max_users", [None, 150])
def test_the_lambda_grid_scored_per_lambda_gives_the_same_choice_and_figures(max_users):
    """Five λ on two or more cores: two rounds of forked solves and one here, each scored where
    it was solved; the chosen λ and every validation NDCG equal the all-models pass, exactly."""
    _, frame = generate_demo_ratings(n_users=400, n_movies=300, n_ratings=20_000, seed=3)
    everything = Ratings(
        frame["user_id"].to_numpy(), frame["movie_id"].to_numpy(), frame["rating"].to_numpy()
    )
    fit_idx, val_idx = validation_split(len(frame), seed=1)
    inner = everything.take(fit_idx)
    halves = np.array_split(val_idx, 2)
    validations = [everything.take(h) for h in halves]
    data = Dataset.load_from_df(frame.iloc[fit_idx][["user_id", "movie_id", "rating"]], Reader())
    factors = SVDFactors.from_svd(
        SVD(n_factors=8, n_epochs=5, random_state=0).fit(data.build_full_trainset())
    )
    base = RankingPolicy(min_user_ratings=3)
    ease = EaseSettings(lambdas=(5.0, 20.0, 60.0, 150.0, 400.0), max_items=250)

    chosen = choose_lists(factors, inner, validations, base, ease, max_users=max_users, seed=4)

    scope = EvalScope(max_users=max_users, seed=4)
    reference = _reference_ease_choice(factors, inner, validations, base, ease, scope)
    assert len({lam for lam, _, _ in reference}) >= 1
    for choice, (lam, ndcg, ndcgs) in zip(chosen, reference, strict=True):
        assert choice.ease_lambda == lam
        assert choice.ease_ndcg == ndcg  # bit for bit, not approximately
        tried = [t["ndcg"] for t in choice.tried if "ease_lambda" in t]
        assert tried == ndcgs
        assert len(set(ndcgs)) > 1  # the grid discriminates: the choice is a real one
