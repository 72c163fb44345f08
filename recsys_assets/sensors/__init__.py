"""Sensors: watch the ratings table, retrain or refresh on new ratings, alert on failed runs."""
