"""Keys of the assets that code outside their own module refers to: sensors, the refresh op,
`recsys run`'s summary. One definition each, so a renamed asset is renamed here once (a test
checks every key below is in the definitions)."""

import dagster as dg

# The app's ratings table (external: reported by the ratings sensor or the app's API call).
RATINGS = dg.AssetKey("ratings")
RATINGS_DF = dg.AssetKey("ratings_df")
SVD_HYPERPARAMETERS = dg.AssetKey("svd_hyperparameters")
CV_REPORT = dg.AssetKey("cv_report")
MODEL_ARTIFACT = dg.AssetKey("model_artifact")
CHAMPION_MODEL = dg.AssetKey("champion_model")
FALLBACK_PREDICTIONS = dg.AssetKey("fallback_predictions")
USER_PREDICTIONS = dg.AssetKey("user_predictions")
