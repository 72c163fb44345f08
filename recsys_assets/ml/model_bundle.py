"""What a model artifact holds: the SVD, the EASE ranking model, the ratings per movie and the
ranking policy, as one pickled value (`ModelBundle`), and the one place older artifacts are
read into it (`bundle_of`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_assets.ml.ease import EASEModel
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.ranking.batch import ShippedModel
from recsys_assets.ml.ranking.keys import item_counts
from recsys_assets.ml.ranking.policy import SOURCE_EASE, RankingPolicy

__all__ = ["ModelBundle", "bundle_of"]


@dataclass(frozen=True)
class ModelBundle:
    """A shipped model. ``svd``: a fitted SVD without its training ratings
    (`ml.stripped_svd`), what ``predict`` and the factors come from; ``counts``: ratings per
    movie it was trained on, indexed like its raw movie ids (None: an artifact saved before
    the counts were kept); ``ease``: the EASE model when ``policy`` ranks with it."""

    svd: object
    counts: np.ndarray | None
    policy: RankingPolicy
    ease: EASEModel | None = None

    def __post_init__(self) -> None:
        if self.policy.ranker == SOURCE_EASE and not isinstance(self.ease, EASEModel):
            raise ValueError(
                "the model's ranking policy ranks with EASE but its artifact carries no EASE model"
            )

    @classmethod
    def of(cls, svd: object, policy: RankingPolicy, ease: EASEModel | None) -> ModelBundle:
        """The bundle of a stripped SVD: its training counts, and EASE only when it ranks."""
        counts = getattr(svd.trainset, "item_counts", None)
        if counts is not None:
            counts = np.asarray(counts, dtype=np.int64)
        return cls(svd, counts, policy, ease if policy.ranker == SOURCE_EASE else None)

    def shipped(self, current_movies: np.ndarray | None = None) -> ShippedModel:
        """What ranks its lists (`ml.ranking.rank_users`). A bundle without its own counts
        ranks by the counts of ``current_movies`` (the movie id of every current rating)."""
        factors = SVDFactors.from_svd(self.svd)
        counts = self.counts
        if counts is None:
            if current_movies is None:
                raise ValueError("the model carries no ratings per movie and none were given")
            counts = item_counts(factors.raw_iids, current_movies)
        return ShippedModel(factors, np.asarray(counts, dtype=np.int64), self.policy, self.ease)


def bundle_of(model: object, manifest: dict) -> ModelBundle:
    """The artifact's model as a `ModelBundle`. Artifacts saved before bundles existed hold the
    SVD alone, with EASE attached as its ``ranking_model`` attribute and the policy only in the
    manifest (``ranking``): they are converted here, the one place that knows that format.

    Raises ``ValueError`` when the artifact holds no model or its EASE model is missing.
    """
    if isinstance(model, ModelBundle):
        return model
    if getattr(model, "trainset", None) is None or not hasattr(model, "pu"):
        raise ValueError(
            f"the artifact holds a {type(model).__name__}, not a fitted model; retrain with "
            "`recsys run`"
        )
    policy = RankingPolicy.from_manifest(manifest)
    ease = model.__dict__.pop("ranking_model", None)
    return ModelBundle.of(model, policy, ease)
