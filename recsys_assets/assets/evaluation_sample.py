"""`evaluation_sample`: the ratings that choose and check a model, within the evaluation budget."""

import time

import dagster as dg
from surprise import Dataset

from recsys_assets.assets.config import EvaluationConfig
from recsys_assets.assets.metadata import peak_rss_mb
from recsys_assets.ml.selection import sample as sampling
from recsys_assets.ml.selection.sample import EvaluationSample, SampleSize


def sample_metadata(size: SampleSize) -> dict:
    """The keys every asset that reports evaluated figures shows (the UI plots the floats)."""
    return {
        "sample_users": size.users,
        "sample_ratings": size.ratings,
        "total_users": size.total_users,
        "total_ratings": size.total_ratings,
        "sample_share_of_ratings": size.ratings / max(size.total_ratings, 1),
        "sample_max_ratings": size.max_ratings,
        "evaluated_on": dg.MetadataValue.text(size.describe()),
    }


@dg.asset(group_name="training", compute_kind="numpy")
def evaluation_sample(
    context: dg.AssetExecutionContext, config: EvaluationConfig, surprise_dataset: Dataset
) -> dg.Output[EvaluationSample]:
    """The ratings `svd_hyperparameters` and `cv_report` evaluate on: every rating up to
    `max_ratings`, above it a seeded sample of whole users holding at most that many.

    The cost of choosing and checking a model is bounded this way while `svd_model` and
    `ranking_model` learn from every rating (`ml.selection.sample`).
    """
    if config.max_ratings < 0:
        raise dg.Failure(f"max_ratings must be >= 0 (0: no cap), got {config.max_ratings}")
    start = time.perf_counter()
    sample = sampling.evaluation_sample(surprise_dataset, config.max_ratings, config.seed)
    size = sample.size
    context.log.info("evaluation on %s", size.describe())
    return dg.Output(
        sample,
        metadata={
            **sample_metadata(size),
            "sampled": size.sampled,
            "seconds": time.perf_counter() - start,
            "peak_rss_mb": peak_rss_mb(),
        },
    )
