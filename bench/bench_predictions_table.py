"""What the app-facing `user_predictions` table costs: its write, its upgrade, the NULL read.

    nice .venv/bin/python bench/bench_predictions_table.py [--users 20000] [--ratings 1000000]
        [--postgres-url postgresql+psycopg2://user:pw@host:port/db]

Per backend (a temporary SQLite file; PostgreSQL when a URL is given, in a throwaway schema):

* write: `replace_predictions` of users x 50 rows into the table (id key, unique
  (user_id, rank), timestamp) vs the same rows into a table of the old shape (no key,
  integer created_at, one user_id index) by the same bulk path, in the same run;
* upgrade: `ensure_schema` converting an old-shape table of that size in place;
* unrated: `read_unrated_pairs` (active ratings without a value, 1% of them) vs
  `read_ratings` of the same table — the extra read user_predictions now makes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid

import numpy as np
import pandas as pd
import sqlalchemy as sa

from recsys_assets import db

TOP_N = 50
_OLD_SHAPE = (
    "CREATE TABLE {name} (user_id BIGINT NOT NULL, movie_id BIGINT NOT NULL, rank INTEGER NOT "
    "NULL, score FLOAT NOT NULL, model_version TEXT NOT NULL, created_at BIGINT NOT NULL, "
    "source VARCHAR(16))"
)


def _predictions(users: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(1, users + 1), TOP_N),
            "movie_id": rng.integers(1, 50_000, users * TOP_N),
            "rank": np.tile(np.arange(1, TOP_N + 1), users),
            "score": rng.uniform(1, 5, users * TOP_N),
            "source": "svd",
        }
    )


def _old_table(engine: sa.Engine, name: str) -> sa.Table:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        conn.exec_driver_sql(_OLD_SHAPE.format(name=name))
        conn.exec_driver_sql(f"CREATE INDEX ix_{name}_user_id ON {name} (user_id)")
    return sa.Table(name, sa.MetaData(), autoload_with=engine)


def _write_old(engine: sa.Engine, table: sa.Table, frame: pd.DataFrame) -> float:
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.delete(table))
        constants = {"model_version": "bench", "created_at": int(time.time())}
        db.bulk.insert_frame(conn, table, frame, constants, chunk_rows=db.BATCH_SIZE)
    return time.perf_counter() - start


def bench(engine: sa.Engine, label: str, users: int, n_ratings: int) -> None:
    frame = _predictions(users)
    rows = len(frame)
    db.ensure_schema(engine, "native")
    old = _old_table(engine, "bench_old_predictions")
    old_seconds = min(_write_old(engine, old, frame) for _ in range(2))
    new_times = []
    for _ in range(2):
        start = time.perf_counter()
        db.replace_predictions(engine, frame, "bench")
        new_times.append(time.perf_counter() - start)
    new_seconds = min(new_times)
    print(
        f"{label}: write {rows:,} rows: new table {new_seconds:.2f}s, old shape "
        f"{old_seconds:.2f}s (x{new_seconds / old_seconds:.2f})"
    )

    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE user_predictions")
        conn.exec_driver_sql(f"ALTER TABLE {old.name} RENAME TO user_predictions")
        conn.exec_driver_sql(f"DROP INDEX ix_{old.name}_user_id")
        conn.exec_driver_sql(
            "CREATE INDEX ix_user_predictions_user_id ON user_predictions (user_id)"
        )
    start = time.perf_counter()
    db.ensure_schema(engine, "native")
    upgrade = time.perf_counter() - start
    assert len(db.read_predictions(engine, user_id=1)) == TOP_N
    print(f"{label}: upgrade of an old-shape table with {rows:,} rows in place: {upgrade:.2f}s")

    rng = np.random.default_rng(1)
    ratings = pd.DataFrame(
        {
            "user_id": rng.integers(1, users + 1, n_ratings),
            "movie_id": rng.integers(1, 20_000, n_ratings),
            "rating": np.where(rng.random(n_ratings) < 0.01, np.nan, 4.0),
            "timestamp": 1,
        }
    )
    db.delete_ratings(engine, "native")
    db.insert_ratings(engine, "native", ratings)
    start = time.perf_counter()
    all_ratings = db.read_ratings(engine, "native")
    read = time.perf_counter() - start
    start = time.perf_counter()
    unrated = db.read_unrated_pairs(engine, "native")
    extra = time.perf_counter() - start
    print(
        f"{label}: read_unrated_pairs {len(unrated):,} of {len(all_ratings):,} ratings: "
        f"{extra:.2f}s vs read_ratings {read:.2f}s (x{extra / read:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--ratings", type=int, default=1_000_000)
    parser.add_argument("--postgres-url")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        engine = db.make_engine(f"sqlite:///{tmp}/bench.db", create=True)
        bench(engine, "sqlite", args.users, args.ratings)
    if args.postgres_url:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres_url)
        with admin.begin() as conn:
            conn.execute(sa.schema.CreateSchema(schema))
        url = sa.make_url(args.postgres_url).update_query_dict(
            {"options": f"-csearch_path={schema}"}
        )
        try:
            bench(
                db.make_engine(url.render_as_string(hide_password=False)),
                "postgresql",
                args.users,
                args.ratings,
            )
        finally:
            db.dispose_engines()
            with admin.begin() as conn:
                conn.execute(sa.schema.DropSchema(schema, cascade=True))
            admin.dispose()
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
