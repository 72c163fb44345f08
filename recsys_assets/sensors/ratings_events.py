"""The `ratings` asset's events: what the ratings sensor writes and the retrain sensor reads.

Both the polling sensor and an application calling Dagster's API report a materialization of
`ratings`; its metadata says how many ratings changed and whose. Reading is lenient (an app may
send only some keys); anything unusable is reported back as a warning, never silently guessed.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg

# Metadata keys of a `ratings` event.
NEW_RATINGS = "new_ratings"  # active ratings inserted
DEACTIVATED = "deactivated"  # ratings switched to active = false (negative: reactivated)
CHANGED_RATINGS = "changed_ratings"  # what counts towards a retrain
USER_IDS = "user_ids"  # users with new ratings (JSON list), for the incremental refresh


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    value = metadata.get(key)
    return value.value if isinstance(value, dg.MetadataValue) else value


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def changed_ratings(metadata: Mapping[str, Any]) -> tuple[int, str | None]:
    """How many ratings an event stands for, and a warning if its metadata had to be guessed.

    `changed_ratings` (the sensor's own events) else `new_ratings` (what an app reports); an
    event without either still means "ratings changed" and counts as 1.
    """
    for key in (CHANGED_RATINGS, NEW_RATINGS):
        if key in metadata:
            number = _as_int(_value(metadata, key))
            if number is not None and number >= 0:
                return number, None
            return 1, f"{key}={_value(metadata, key)!r} is not a non-negative integer; counted as 1"
    return 1, f"no {NEW_RATINGS} in the event metadata; counted as 1"


def user_ids(metadata: Mapping[str, Any]) -> tuple[list[int], str | None]:
    """User ids listed in an event (`user_ids`: JSON list of integers), and a warning if bad."""
    if USER_IDS not in metadata:
        return [], None
    raw = _value(metadata, USER_IDS)
    values = raw if isinstance(raw, list) else None
    ids = [_as_int(v) for v in values] if values is not None else [None]
    if any(i is None for i in ids):
        return [], f"{USER_IDS}={raw!r} is not a list of integer user ids; ignored"
    return [i for i in ids if i is not None], None
