"""`ratings_df`: cleaning settings from the environment or the run, blocking on unusable
data, and failures that name the database."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from recsys_assets.assets.ratings import ratings_df
from recsys_assets.db import RatingsStore
from recsys_assets_tests.conftest import make_resources

NOW = 1_700_000_000


def _materialize(home, database, instance, run_config=None):
    return dg.materialize(
        [ratings_df],
        resources=make_resources(home, database),
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )


def _failure(result) -> str:
    (event,) = [e for e in result.all_events if e.is_step_failure]
    data = event.step_failure_data
    return data.user_failure_data.description if data.user_failure_data else str(data.error)


def _cause(result) -> str:
    """What `recsys run` and the failure sensor report: the innermost cause."""
    from recsys_assets.cli.summary import failure_cause

    (event,) = [e for e in result.all_events if e.is_step_failure]
    return failure_cause(event.step_failure_data.error)


def _meta(result) -> dict:
    (event,) = result.asset_materializations_for_node("ratings_df")
    return {k: v.value for k, v in event.metadata.items()}


@pytest.fixture
def ten_point_db(ratings_db: RatingsStore) -> RatingsStore:
    """1,000 ratings on a 1-10 scale: 55% of them are above the default 0.5-5."""
    rng = np.random.default_rng(3)
    n = 1_000
    ratings_db.insert_ratings(
        pd.DataFrame(
            {
                "user_id": rng.integers(1, 40, n),
                "movie_id": np.arange(n),
                "rating": rng.integers(1, 11, n).astype(float),
                "timestamp": NOW - np.arange(n),
            }
        )
    )
    return ratings_db


def test_a_ten_point_scale_under_the_default_blocks_naming_the_scale(
    recsys_home, ten_point_db, instance
):
    result = _materialize(recsys_home, ten_point_db, instance)
    assert not result.success
    message = _failure(result)
    out_of_scale = int(
        (ten_point_db.read_ratings()["rating"] > 5.0).sum()  # what the default scale drops
    )
    assert f"cleaning would drop {out_of_scale} of 1000 ratings" in message
    assert f"out_of_scale {out_of_scale}" in message and "run from 1 to 10" in message
    assert "RECSYS_RATING_SCALE=MIN,MAX" in message and "--rating-scale" in message
    assert not result.asset_materializations_for_node("ratings_df")


def test_the_scale_from_the_environment_or_the_run(
    recsys_home, ten_point_db, instance, monkeypatch
):
    monkeypatch.setenv("RECSYS_RATING_SCALE", "1,10")
    meta = _meta(_materialize(recsys_home, ten_point_db, instance))
    assert (meta["rows_kept"], meta["scale_min"], meta["scale_max"]) == (1000, 1.0, 10.0)
    assert meta["rating_max"] == 10.0 and meta["dropped_out_of_scale"] == 0
    monkeypatch.delenv("RECSYS_RATING_SCALE")
    config = {"ops": {"ratings_df": {"config": {"rating_min": 1.0, "rating_max": 10.0}}}}
    meta = _meta(_materialize(recsys_home, ten_point_db, instance, config))
    assert (meta["rows_kept"], meta["scale_max"]) == (1000, 10.0)


def test_a_larger_allowed_share_trains_on_the_rest(recsys_home, ten_point_db, instance):
    config = {"ops": {"ratings_df": {"config": {"max_invalid_fraction": 0.9}}}}
    meta = _meta(_materialize(recsys_home, ten_point_db, instance, config))
    assert meta["rows_kept"] == 1000 - meta["dropped_out_of_scale"]
    assert meta["invalid_fraction"] == meta["dropped_out_of_scale"] / 1000


def test_missing_and_future_timestamps_are_counted(recsys_home, demo_db, instance):
    import sqlalchemy as sa

    with demo_db.engine().begin() as conn:
        ids = conn.execute(sa.text("SELECT id FROM ratings ORDER BY id LIMIT 5")).scalars().all()
        conn.execute(
            sa.text("UPDATE ratings SET created_at = 4102444800 WHERE id = :i"), {"i": ids[0]}
        )
        conn.execute(
            sa.text("UPDATE ratings SET created_at = 'garbage' WHERE id IN (:a, :b)"),
            {"a": ids[1], "b": ids[2]},
        )
    meta = _meta(_materialize(recsys_home, demo_db, instance))
    assert meta["flagged_future_timestamp"] == 1
    assert meta["flagged_missing_timestamp"] == 2
    assert meta["rows_kept"] == meta["rows_read"]  # flagged rows are still trained on


def test_a_file_that_is_not_a_database_fails_the_step_naming_it(recsys_home, instance, tmp_path):
    junk = tmp_path / "ratings.db"
    junk.write_bytes(b"this is not a database" * 100)
    result = _materialize(recsys_home, RatingsStore(f"sqlite:///{junk}"), instance)
    assert not result.success
    for message in (_failure(result), _cause(result)):
        assert str(junk) in message and "is not a SQLite database" in message


def test_a_missing_driver_fails_the_step_naming_the_url_and_the_fix(recsys_home, instance):
    url = "postgresql+psycopg://app:s3cret@db.example/app"
    result = _materialize(recsys_home, RatingsStore(url), instance)
    for message in (_failure(result), _cause(result)):
        assert "postgresql+psycopg://app:***@db.example/app" in message
        assert "s3cret" not in message
        assert "No module named 'psycopg'" in message and "postgresql+psycopg2://" in message
