"""The ratings database: every SQL statement the project runs lives in this package.

Written with SQLAlchemy Core so the same code runs on SQLite (the embedded default) and
PostgreSQL. Plain Python, no Dagster. Where things are:

* `schema` — the `Table` objects (the project's own and the Django app's) and `DjangoSchema`.
* `presets` — the table layouts as data (`native`, `django`): tables, ratings query, and
  `ensure_schema` / `check_ratings_tables`.
* `engines` — one cached engine per URL, SQLite pragmas, fork safety, `safe_url`.
* `bulk`, `values` — the bulk write paths (COPY, batched INSERT) and column conversions.
* `ratings` — reading, counting, loading and deleting ratings; movie titles.
* `predictions` — the atomic swap of `user_predictions`, its reads and upgrades.
* `changes` — the sensors' watermark and new-ratings ranges.
* `store` — `RatingsStore`: one database (URL + preset) with all of the above as methods.
"""

from recsys_assets.db.bulk import BATCH_SIZE
from recsys_assets.db.changes import (
    RatingsChanges,
    RatingsWatermark,
    ratings_changes,
    ratings_watermark,
)
from recsys_assets.db.engines import (
    DatabaseUnusableError,
    MissingDatabaseError,
    dispose_engines,
    make_engine,
    safe_url,
    sqlite_file,
)
from recsys_assets.db.predictions import read_predictions, replace_predictions
from recsys_assets.db.presets import (
    Preset,
    SchemaPreset,
    check_preset,
    check_ratings_tables,
    create_django_tables,
    ensure_schema,
    preset_of,
)
from recsys_assets.db.ratings import (
    RatingsRead,
    count_ratings,
    delete_ratings,
    insert_movies,
    insert_ratings,
    read_movie_titles,
    read_ratings,
    read_ratings_with_reader,
    read_unrated_pairs,
    read_user_ratings,
)
from recsys_assets.db.schema import (
    DEFAULT_DJANGO_SCHEMA,
    PREDICTION_COLUMNS,
    PREDICTIONS_TABLE,
    RATINGS_COLUMNS,
    DjangoSchema,
    SchemaError,
)
from recsys_assets.db.store import RatingsStore
from recsys_assets.db.values import to_unix_seconds

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_DJANGO_SCHEMA",
    "PREDICTION_COLUMNS",
    "PREDICTIONS_TABLE",
    "RATINGS_COLUMNS",
    "DjangoSchema",
    "DatabaseUnusableError",
    "MissingDatabaseError",
    "Preset",
    "RatingsChanges",
    "RatingsRead",
    "RatingsStore",
    "RatingsWatermark",
    "SchemaError",
    "SchemaPreset",
    "check_preset",
    "check_ratings_tables",
    "count_ratings",
    "create_django_tables",
    "delete_ratings",
    "dispose_engines",
    "ensure_schema",
    "insert_movies",
    "insert_ratings",
    "make_engine",
    "preset_of",
    "read_movie_titles",
    "read_predictions",
    "read_ratings",
    "read_ratings_with_reader",
    "read_unrated_pairs",
    "read_user_ratings",
    "replace_predictions",
    "ratings_changes",
    "ratings_watermark",
    "safe_url",
    "sqlite_file",
    "to_unix_seconds",
]
