"""Asset checks: data checks on `ratings_df` and the promotion gates on `model_artifact`.

Each group runs as one step (`ratings_df_checks`, `model_artifact_gates`: a
`multi_asset_check`), as every step costs Dagster a dozen event-log rows; the UI still shows
each check on its own. Every check here is blocking with ERROR severity: when one fails, the
assets downstream of the checked asset do not run. A bad ratings read therefore never trains
a model, and a candidate model that fails a gate is never promoted (`champion_model` is
skipped), so `latest` and the `user_predictions` table stay with the champion; with no
champion yet, the gates' step writes the most-popular shelf instead. Each result's
description and metadata say why, on the asset's *Checks* tab in the UI.
"""

from recsys_assets.checks.gates import (
    GatesConfig,
    PromotionConfig,
    RankingGateConfig,
    beats_baseline,
    model_artifact_gates,
    not_worse_than_champion,
    shipped_ndcg,
    shipped_ranking_not_worse_than_champion,
)
from recsys_assets.checks.ratings import (
    VolumeCheckConfig,
    ratings_df_checks,
    ratings_not_empty,
    ratings_volume,
    ratings_within_scale,
)

__all__ = [
    "GatesConfig",
    "PromotionConfig",
    "RankingGateConfig",
    "VolumeCheckConfig",
    "beats_baseline",
    "model_artifact_gates",
    "not_worse_than_champion",
    "ratings_df_checks",
    "ratings_not_empty",
    "ratings_volume",
    "ratings_within_scale",
    "shipped_ndcg",
    "shipped_ranking_not_worse_than_champion",
]
