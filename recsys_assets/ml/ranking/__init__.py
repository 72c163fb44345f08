"""One ranking definition for every path that ranks: batch writes (``user_predictions``, the
refresh), cross-validation and serving.

* ``policy``: which list a user gets (blend, EASE or most-popular) and how the blend's weights
  are chosen;
* ``keys``: one key builder per list (blend, EASE's catalogue keys, the popularity order);
* ``top_k``: the one ordered top-k (ties by movie id) and the blend's block ranker;
* ``batch``: every user's shipped list (``rank_users``);
* ``metrics``: precision/recall/NDCG@k of lists; ``popular``: the shelf without a model.
"""

from recsys_assets.ml.ranking.batch import ShippedModel, rank_users
from recsys_assets.ml.ranking.keys import item_counts, popularity_feature
from recsys_assets.ml.ranking.metrics import ranking_metrics
from recsys_assets.ml.ranking.policy import (
    DEFAULT_GRID,
    SOURCE_EASE,
    SOURCE_POPULAR,
    SOURCE_SVD,
    RankingPolicy,
)

__all__ = [
    "DEFAULT_GRID",
    "SOURCE_EASE",
    "SOURCE_POPULAR",
    "SOURCE_SVD",
    "RankingPolicy",
    "ShippedModel",
    "item_counts",
    "popularity_feature",
    "rank_users",
    "ranking_metrics",
]
