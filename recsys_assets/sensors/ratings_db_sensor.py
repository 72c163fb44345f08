"""`ratings_db_sensor`: polls the ratings table and reports changes as `ratings` events.

The cursor (kept in the Dagster instance, so it survives daemon restarts) is the table's
watermark: max(id) and the count of inactive rows — both index lookups. A new max(id) means
new ratings (read back by primary-key range, with their users); a higher inactive count means
deactivations, which is how the Django app retires a user's previous rating of a movie.
"""

import json

import dagster as dg
import sqlalchemy as sa

from recsys_assets.asset_keys import RATINGS
from recsys_assets.db import RatingsStore, RatingsWatermark
from recsys_assets.sensors.ratings_events import (
    CHANGED_RATINGS,
    DEACTIVATED,
    NEW_RATINGS,
    USER_IDS,
)
from recsys_assets.settings import Settings


def _load_cursor(cursor: str | None) -> RatingsWatermark | None:
    if not cursor:
        return None
    data = json.loads(cursor)
    return RatingsWatermark(max_id=int(data["max_id"]), inactive=int(data["inactive"]))


def _dump_cursor(mark: RatingsWatermark) -> str:
    return json.dumps(mark._asdict(), sort_keys=True)


def _watermark_metadata(mark: RatingsWatermark) -> dict[str, int]:
    return {"max_rating_id": mark.max_id, "inactive_ratings": mark.inactive}


def evaluate_ratings_db(
    context: dg.SensorEvaluationContext, ratings_db: RatingsStore
) -> dg.SensorResult | dg.SkipReason:
    try:
        mark = ratings_db.watermark()
    except sa.exc.SQLAlchemyError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RuntimeError(
            f"cannot read the ratings table ({ratings_db.preset.name} preset) in "
            f"{ratings_db.safe_url()}: {first_line}"
        ) from exc
    previous = _load_cursor(context.cursor)
    if previous is None or mark.max_id < previous.max_id:
        # First tick (or the table was emptied/restored): start watching from here. Existing
        # rows are not "new"; the daily schedule trains on them.
        reason = "first tick" if previous is None else "max id went down (table reset?)"
        context.log.info("ratings watermark baseline (%s): %s", reason, mark)
        observation = dg.AssetObservation(
            asset_key=RATINGS,
            description=f"ratings sensor baseline ({reason})",
            metadata=_watermark_metadata(mark),
        )
        return dg.SensorResult(asset_events=[observation], cursor=_dump_cursor(mark))
    if mark == previous:
        return dg.SkipReason(f"no change in the ratings table (max id {mark.max_id})")

    changes = ratings_db.changes(previous.max_id, mark.max_id)
    deactivated = mark.inactive - previous.inactive
    changed = changes.new_ratings + max(deactivated, 0)
    if changed == 0:
        # e.g. rows of another Django content type: move the cursor, report nothing.
        return dg.SensorResult(cursor=_dump_cursor(mark))
    context.log.info(
        "%d new ratings from %d users, %d deactivated (ids %d..%d)",
        changes.new_ratings,
        len(changes.user_ids),
        deactivated,
        previous.max_id + 1,
        mark.max_id,
    )
    event = dg.AssetMaterialization(
        asset_key=RATINGS,
        description=f"{changes.new_ratings} new ratings, {deactivated} deactivated",
        metadata={
            NEW_RATINGS: changes.new_ratings,
            DEACTIVATED: deactivated,
            CHANGED_RATINGS: changed,
            "users": len(changes.user_ids),
            USER_IDS: dg.MetadataValue.json(changes.user_ids),
            **_watermark_metadata(mark),
        },
    )
    return dg.SensorResult(asset_events=[event], cursor=_dump_cursor(mark))


def build_ratings_db_sensor(
    minimum_interval_seconds: int | None = None,
) -> dg.SensorDefinition:
    @dg.sensor(
        name="ratings_db_sensor",
        minimum_interval_seconds=minimum_interval_seconds
        or Settings.from_env().sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Polls the ratings table (max id + inactive count) and reports new and "
        "deactivated ratings as materializations of `ratings`.",
    )
    def ratings_db_sensor(
        context: dg.SensorEvaluationContext, ratings_db: dg.ResourceParam[RatingsStore]
    ) -> dg.SensorResult | dg.SkipReason:
        return evaluate_ratings_db(context, ratings_db)

    return ratings_db_sensor
