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


def _problem():
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
    return factors, inner, validations, RankingPolicy(min_user_ratings=3)


@pytest.mark.parametrize(
    ("lambdas", "max_users"),
    [
        # Rising at the top of the grid: the two largest λ are solved, the others are not.
        ((5.0, 20.0, 60.0, 150.0, 400.0), None),
        ((5.0, 20.0, 60.0, 150.0, 400.0), 150),
        # Turning (the largest λ ranks worse): the whole grid is solved.
        ((20.0, 60.0, 150.0, 3000.0, 10000.0), None),
        ((20.0, 60.0, 150.0, 3000.0, 10000.0), 150),
    ],
)
def test_the_lambda_grid_gives_the_whole_grids_choice_and_figures(lambdas, max_users, monkeypatch):
    """Each λ scored in the process that solved it (forked rounds and one here), the grid
    stopped after its two largest λ when the curve still rises there: the chosen λ and every
    solved λ's validation NDCG equal those of the whole grid ranked in one pass, exactly."""
    from recsys_assets.ml.selection import list_choice

    factors, inner, validations, base = _problem()
    ease = EaseSettings(lambdas=lambdas, max_items=250)
    solved = []
    real_path = list_choice.map_ease_path

    def spy_path(users, movies, lams, *args, **kwargs):
        solved.extend(lams)
        return real_path(users, movies, lams, *args, **kwargs)

    monkeypatch.setattr(list_choice, "map_ease_path", spy_path)
    chosen = choose_lists(factors, inner, validations, base, ease, max_users=max_users, seed=4)

    scope = EvalScope(max_users=max_users, seed=4)
    reference = _reference_ease_choice(factors, inner, validations, base, ease, scope)
    rising = [ndcgs[-1] > ndcgs[-2] for _, _, ndcgs in reference]
    assert all(rising) == (lambdas[-1] == 400.0)  # the two cases above are what they say
    assert sorted(solved) == (sorted(lambdas[-2:]) if all(rising) else sorted(lambdas))
    for choice, (lam, ndcg, ndcgs), up in zip(chosen, reference, rising, strict=True):
        assert choice.ease_lambda == lam
        assert choice.ease_ndcg == ndcg  # bit for bit, not approximately
        # A validation set whose curve rises at the top of the grid has the two largest λ as
        # candidates, whatever else was solved for the other set.
        candidates = lambdas[-2:] if up else lambdas
        tried = {t["ease_lambda"]: t["ndcg"] for t in choice.tried if "ease_lambda" in t}
        assert tried == {c: v for c, v in zip(lambdas, ndcgs, strict=True) if c in candidates}
        assert len(set(ndcgs)) > 1  # the grid discriminates: the choice is a real one
