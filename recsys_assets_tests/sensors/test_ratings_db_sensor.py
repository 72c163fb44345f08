"""`ratings_db_sensor` against real SQLite ratings databases (native and django presets)."""

import json

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from recsys_assets import db
from recsys_assets.db import RatingsStore
from recsys_assets.sensors.ratings_db_sensor import build_ratings_db_sensor

SENSOR = build_ratings_db_sensor()


def _tick(database: RatingsStore, cursor: str | None):
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"ratings_db": database}
        )
        return SENSOR(context)


def _ratings(rows):
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])


def _event_metadata(result: dg.SensorResult) -> dict:
    (event,) = result.asset_events
    assert isinstance(event, dg.AssetMaterialization)
    assert event.asset_key == dg.AssetKey("ratings")
    return {k: v.value for k, v in event.metadata.items()}


def test_first_tick_is_a_baseline_then_new_ratings_are_reported(demo_db):
    first = _tick(demo_db, None)
    assert isinstance(first, dg.SensorResult) and not first.run_requests
    (baseline,) = first.asset_events
    # The existing rows are the starting point, not "new ratings".
    assert isinstance(baseline, dg.AssetObservation)
    assert json.loads(first.cursor)["max_id"] == 5000

    assert isinstance(_tick(demo_db, first.cursor), dg.SkipReason)

    demo_db.insert_ratings(_ratings([(7, 1, 4.0, 10), (7, 2, 3.0, 11), (500, 3, 5.0, 12)]))
    second = _tick(demo_db, first.cursor)
    meta = _event_metadata(second)
    assert meta["new_ratings"] == 3 and meta["changed_ratings"] == 3
    assert meta["deactivated"] == 0
    assert meta["user_ids"] == [7, 500] and meta["users"] == 2
    assert json.loads(second.cursor) == {"inactive": 0, "max_id": 5003}

    # Same watermark, nothing to report: the cursor is the durable high-water mark.
    assert isinstance(_tick(demo_db, second.cursor), dg.SkipReason)


def test_deactivations_are_seen(demo_db):
    cursor = _tick(demo_db, None).cursor
    with demo_db.engine().begin() as conn:
        conn.execute(
            sa.update(db.schema.ratings)
            .where(db.schema.ratings.c.id.in_([1, 2]))
            .values(active=False)
        )
    meta = _event_metadata(_tick(demo_db, cursor))
    assert meta["new_ratings"] == 0 and meta["deactivated"] == 2 and meta["changed_ratings"] == 2
    assert meta["inactive_ratings"] == 2


def test_a_reset_table_restarts_the_baseline(demo_db):
    cursor = _tick(demo_db, None).cursor
    demo_db.delete_ratings()
    result = _tick(demo_db, cursor)
    assert isinstance(result.asset_events[0], dg.AssetObservation)
    assert json.loads(result.cursor)["max_id"] == 0


@pytest.fixture
def django_db(recsys_home):
    database = RatingsStore(f"sqlite:///{recsys_home / 'django.db'}", preset="django")
    db.create_django_tables(db.make_engine(database.url, create=True))
    database.ensure_schema()
    database.insert_ratings(_ratings([(1, 10, 4.0, 100), (2, 10, 3.0, 101)]))
    return database


def test_django_rerating_and_other_content_types(django_db):
    """The Django app re-rates by inserting a row and deactivating the user's older one."""
    engine = django_db.engine()
    cursor = _tick(django_db, None).cursor
    with engine.begin() as conn:
        conn.execute(
            sa.update(db.schema.ratings_rating)
            .where(db.schema.ratings_rating.c.id == 1)
            .values(active=False)
        )
    django_db.insert_ratings(_ratings([(1, 10, 5.0, 200)]))
    result = _tick(django_db, cursor)
    meta = _event_metadata(result)
    assert meta["new_ratings"] == 1 and meta["deactivated"] == 1 and meta["user_ids"] == [1]

    # A rating of something that is not a movie moves the cursor but reports nothing.
    with engine.begin() as conn:
        conn.execute(
            db.schema.django_content_type.insert().values(id=99, app_label="blog", model="post")
        )
        conn.execute(
            db.schema.ratings_rating.insert().values(
                user_id=3, value=1.0, content_type_id=99, object_id=1, active=True
            )
        )
    other = _tick(django_db, result.cursor)
    assert isinstance(other, dg.SensorResult) and not other.asset_events
    assert json.loads(other.cursor)["max_id"] == json.loads(result.cursor)["max_id"] + 1


def test_missing_table_is_a_clear_error(recsys_home):
    recsys_home.mkdir(parents=True)
    (recsys_home / "empty.db").touch()
    empty = RatingsStore(f"sqlite:///{recsys_home / 'empty.db'}")
    with pytest.raises(RuntimeError, match="table 'ratings' does not exist .*'native'"):
        _tick(empty, None)


def test_missing_database_file_is_named_and_not_created(recsys_home):
    missing = recsys_home / "typo.db"
    with pytest.raises(db.MissingDatabaseError, match=str(missing)):
        _tick(RatingsStore(f"sqlite:///{missing}"), None)
    assert not missing.exists()
