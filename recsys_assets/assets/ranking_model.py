"""`ranking_model`: EASE fitted on every rating as implicit feedback, beside `svd_model`."""

import time

import dagster as dg
import pandas as pd

from recsys_assets.assets.metadata import peak_rss_mb
from recsys_assets.ml.ease import EASEModel, fit_ease
from recsys_assets.ml.ranking import SOURCE_EASE
from recsys_assets.ml.selection.cv_result import CVResult


@dg.asset(group_name="training", compute_kind="numpy")
def ranking_model(
    context: dg.AssetExecutionContext, ratings_df: pd.DataFrame, cv_report: CVResult
) -> dg.Output[EASEModel | None]:
    """EASE (`ml.ease`) on every (user, movie) rating, with the λ and movies `cv_report` chose.

    A rating is an interaction, whatever its value. λ is the median of the folds' choices, each
    made on validation ratings from that fold's training data, scaled to every rating when
    the evaluation ran on a sample (`EaseSpec`). Which list users get (EASE or the
    SVD blend) is `cv_report`'s `policy`; `model_artifact` carries this model. None when EASE
    does not ship (the blend ranked better on validation, or empty `ease_lambdas`): a model
    nobody is served is not fitted.
    """
    spec = cv_report.ease
    if spec is None:
        context.log.info("EASE does not ship (cv_report's policy): nothing to fit")
        return dg.Output(None, metadata={"fitted": False})
    start = time.perf_counter()
    model = fit_ease(
        ratings_df["user_id"].to_numpy(),
        ratings_df["movie_id"].to_numpy(),
        float(spec.lam),
        spec.max_items,
        log=context.log,
        min_ratings=spec.min_item_ratings,
    )
    seconds = time.perf_counter() - start
    share = model.n_ratings / max(len(ratings_df), 1)
    context.log.info(
        "fitted EASE (λ=%g) on %d movies (%.1f%% of the ratings) in %.2fs",
        model.lam,
        model.n_items,
        100 * share,
        seconds,
    )
    return dg.Output(
        model,
        metadata={
            "fitted": True,
            "lambda": model.lam,
            # λ as chosen on the evaluation sample, before scaling to every rating.
            **({"lambda_validated": spec.validated_lam} if spec.validated_lam is not None else {}),
            "movies": model.n_items,
            "max_items": int(spec.max_items or 0),
            "min_item_ratings": int(spec.min_item_ratings),
            "interactions": model.n_ratings,
            "share_of_ratings": share,
            "users": model.n_users,
            "weights_mb": model.weights.nbytes / 2**20,
            "fit_seconds": seconds,
            "shipped": cv_report.policy.ranker == SOURCE_EASE,
            "peak_rss_mb": peak_rss_mb(),
        },
    )
