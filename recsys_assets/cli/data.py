"""`recsys demo-data` and `recsys import-movielens`: load ratings into the database."""

from __future__ import annotations

import argparse
import time

from recsys_assets.settings import Settings
from recsys_assets.usage import UsageError, open_db, refuse_app_tables

# MovieLens-like shapes for `demo-data --shape`: (users, movies, ratings). 25m is ML-25M's.
DEMO_SHAPES = {
    "100k": (1_000, 1_700, 100_000),
    "1m": (6_040, 3_706, 1_000_000),
    "5m": (32_500, 26_000, 5_000_000),
    "25m": (162_541, 59_047, 25_000_000),
}


def cmd_demo_data(args: argparse.Namespace) -> int:
    from recsys_assets.data.demo import generate_demo_ratings

    configured = Settings.from_env().database_url_configured
    # The embedded database (and its folder) may be created; a configured one must exist.
    database = open_db(create=not configured)
    refuse_app_tables(database, "insert demo data")
    if configured and not args.into_configured_database:
        raise UsageError(
            "RECSYS_DATABASE_URL is set: demo data goes only into the embedded database unless "
            "you pass --into-configured-database (synthetic ratings in a real database would "
            "train and promote a model on fake data)"
        )
    where = f"{database.safe_url()} (schema {database.preset.name})"
    if args.if_empty:
        existing = database.count_ratings()
        if existing:
            print(f"{existing} ratings already in {where}; nothing to do")
            return 0
    if args.shape:
        args.users, args.movies, args.ratings = DEMO_SHAPES[args.shape]
    started = time.perf_counter()
    try:
        movies, ratings = generate_demo_ratings(
            n_users=args.users, n_movies=args.movies, n_ratings=args.ratings, seed=args.seed
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    n_movies = database.insert_movies(movies)
    n_ratings = database.insert_ratings(ratings)
    print(
        f"inserted {n_movies} movies and {n_ratings} demo ratings "
        f"({ratings['user_id'].nunique()} users, seed {args.seed}) into {where} "
        f"in {time.perf_counter() - started:.1f}s"
    )
    return 0


def cmd_import_movielens(args: argparse.Namespace) -> int:
    from recsys_assets.data.movielens import read_movielens

    started = time.perf_counter()
    # Parse first: a bad path must not touch the database.
    try:
        movies, ratings = read_movielens(args.path)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    database = open_db(create=True)
    refuse_app_tables(database, "import MovieLens")
    where = f"{database.safe_url()} (schema {database.preset.name})"
    existing = database.count_ratings()
    if existing and not args.replace:
        raise UsageError(
            f"{where} already holds {existing} ratings; pass --replace to delete them first"
        )
    deleted = database.delete_ratings() if args.replace else 0
    n_movies = database.insert_movies(movies)
    n_ratings = database.insert_ratings(ratings)
    replaced = f" (replaced {deleted} existing ratings)" if deleted else ""
    print(
        f"imported {n_ratings} ratings from {ratings['user_id'].nunique()} users and "
        f"{n_movies} new movies from {args.path} into {where}{replaced} "
        f"in {time.perf_counter() - started:.1f}s"
    )
    return 0
