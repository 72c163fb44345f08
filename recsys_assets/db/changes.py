"""Change tracking for the sensors: a cheap watermark and the ratings added since one."""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recsys_assets.db.presets import Preset, preset_of


class RatingsWatermark(NamedTuple):
    """Cheap fingerprint of the ratings table, compared tick to tick by the ratings sensor.

    max_id: highest row id (primary-key index) — grows with every new rating. inactive: rows
    with active = false (partial index in the native preset) — grows when the app deactivates
    a rating, as the Django app does for the previous rating when a user re-rates a movie.
    """

    max_id: int
    inactive: int


class RatingsChanges(NamedTuple):
    """Active movie ratings with ids in (after_id, upto_id], grouped by user."""

    new_ratings: int
    user_ids: list[int]


def ratings_watermark(engine: Engine, preset: Preset) -> RatingsWatermark:
    """max(id) of the ratings table and its inactive-row count (django: of the rated content
    type only, so re-ratings of other content types do not count towards retraining).

    Two index lookups, no table scan: max over the primary key, and a count over the inactive
    rows (native: partial index `ix_ratings_inactive`; django: add the index in the README).
    """
    layout = preset_of(preset)
    max_id = sa.select(sa.func.max(layout.ratings.c.id))
    with engine.connect() as conn:
        return RatingsWatermark(
            max_id=int(conn.execute(max_id).scalar() or 0),
            inactive=int(conn.execute(layout.inactive_count).scalar_one()),
        )


def ratings_changes(engine: Engine, preset: Preset, after_id: int, upto_id: int) -> RatingsChanges:
    """New active movie ratings with row id in (after_id, upto_id] and the users who made them.

    A range scan on the primary key: the cost follows the number of new rows, not the table.
    """
    layout = preset_of(preset)
    stmt, id_col = layout.ratings_query, layout.rating_id
    sub = stmt.where(id_col > int(after_id), id_col <= int(upto_id)).subquery()
    per_user = (
        sa.select(sub.c.user_id, sa.func.count().label("n"))
        .group_by(sub.c.user_id)
        .order_by(sub.c.user_id)
    )
    with engine.connect() as conn:
        rows = conn.execute(per_user).all()
    return RatingsChanges(
        new_ratings=int(sum(n for _, n in rows)), user_ids=[int(u) for u, _ in rows]
    )
