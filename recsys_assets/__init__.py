"""recsys_assets: movie-recommendation training as Dagster software-defined assets."""
