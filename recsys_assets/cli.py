"""The `recsys` command line: load data into the ratings database and run the pipeline.

    recsys demo-data [--users N --movies N --ratings N | --shape 25m] [--seed S] [--if-empty]
    recsys import-movielens PATH [--replace]
    recsys run [--n-epochs N --folds K --top-n N --no-demo-data]

The database comes from RECSYS_DATABASE_URL / RECSYS_SCHEMA (embedded SQLite under RECSYS_HOME
by default). Exit codes: 0 success, 2 bad input (usage errors, missing paths, unusable data).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from recsys_assets.db import SchemaError
from recsys_assets.resources.ratings_db import RatingsDatabase

# MovieLens-like shapes for `demo-data --shape`: (users, movies, ratings). 25m is ML-25M's.
DEMO_SHAPES = {
    "100k": (1_000, 1_700, 100_000),
    "1m": (6_040, 3_706, 1_000_000),
    "5m": (32_500, 26_000, 5_000_000),
    "25m": (162_541, 59_047, 25_000_000),
}


class UsageError(Exception):
    """Bad input from the user: reported as one `error:` line and exit code 2."""


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {number}")
    return number


def open_db() -> RatingsDatabase:
    try:
        database = RatingsDatabase.from_env()
    except ValueError as exc:  # unknown RECSYS_SCHEMA
        raise UsageError(str(exc)) from exc
    try:
        database.ensure_schema()
    except SchemaError as exc:  # django preset pointed at a database without Django's tables
        raise UsageError(str(exc)) from exc
    return database


def cmd_demo_data(args: argparse.Namespace) -> int:
    from recsys_assets.data.demo import generate_demo_ratings

    database = open_db()
    where = f"{database.safe_url()} (schema {database.preset})"
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
    database = open_db()
    where = f"{database.safe_url()} (schema {database.preset})"
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


def cmd_run(args: argparse.Namespace) -> int:
    # Lazy: the Dagster definitions are heavy to import and only `run` needs them.
    from recsys_assets.runner import run_command

    return run_command(args)


def cmd_ui(args: argparse.Namespace) -> int:
    from recsys_assets.runner import ui_command

    return ui_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys", description="Movie-recommendation training pipeline (Dagster + Surprise)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo-data", help="generate synthetic ratings into the database")
    demo.add_argument("--users", type=_positive, default=1000, help="number of users (1000)")
    demo.add_argument("--movies", type=_positive, default=1700, help="number of movies (1700)")
    demo.add_argument(
        "--ratings", type=_non_negative, default=100_000, help="number of ratings (100000)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    demo.add_argument(
        "--shape",
        choices=sorted(DEMO_SHAPES),
        help="a MovieLens-like size (users, movies, ratings); overrides the three counts",
    )
    demo.add_argument(
        "--if-empty", action="store_true", help="do nothing if the database already has ratings"
    )
    demo.set_defaults(handler=cmd_demo_data)

    ml = sub.add_parser("import-movielens", help="import a MovieLens dataset into the database")
    ml.add_argument("path", help="dataset directory (ml-100k, ml-latest, ...) or its ratings file")
    ml.add_argument(
        "--replace", action="store_true", help="delete the existing ratings before importing"
    )
    ml.set_defaults(handler=cmd_import_movielens)

    run = sub.add_parser("run", help="train, evaluate and publish predictions once")
    run.add_argument("--n-epochs", type=_positive, default=20, help="SVD epochs (20)")
    run.add_argument("--folds", type=_positive, default=4, help="cross-validation folds (4)")
    run.add_argument("--top-n", type=_positive, default=50, help="predictions per user (50)")
    run.add_argument(
        "--no-demo-data",
        action="store_true",
        help="fail instead of generating demo data when the database is empty",
    )
    run.set_defaults(handler=cmd_run)

    ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on this project")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    ui.add_argument("--port", type=_positive, default=3000, help="port (3000)")
    ui.set_defaults(handler=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage / help
        return exc.code if isinstance(exc.code, int) else 2
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args) or 0)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
