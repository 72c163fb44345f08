"""The `recsys` command line: load data into the ratings database and run the pipeline.

    recsys demo-data [--users N --movies N --ratings N | --shape 25m] [--seed S] [--if-empty]
    recsys import-movielens PATH [--replace]
    recsys run [--tuning search|fixed --n-epochs N --folds K --top-n N --no-demo-data]
    recsys models list | show VERSION | promote VERSION | rollback | prune [--keep K]
    recsys recommend USER [--n 10]

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


def refuse_app_tables(database: RatingsDatabase, action: str) -> None:
    """The django preset reads the app's tables and never writes them (UsageError if asked)."""
    if database.preset == "django":
        schema = database.django_schema()
        raise UsageError(
            f"RECSYS_SCHEMA=django reads the Django app's tables in {database.safe_url()} "
            f"({schema.ratings_table}, {schema.movies_table}) and never writes them, so it "
            f"cannot {action}; ratings come from the app itself (use RECSYS_SCHEMA=native with "
            "the project's own database to load data)"
        )


def cmd_demo_data(args: argparse.Namespace) -> int:
    from recsys_assets.data.demo import generate_demo_ratings

    database = open_db()
    refuse_app_tables(database, "insert demo data")
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
    refuse_app_tables(database, "import MovieLens")
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


def _store():
    from recsys_assets.resources.model_store import ModelStore

    return ModelStore.from_env()


def _fmt(value: object, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def cmd_models_list(args: argparse.Namespace) -> int:
    store = _store()
    versions = store.versions()
    if not versions:
        print(f"no model versions under {store.root_path}")
        return 0
    latest = store.latest_manifest()
    current = latest["version"] if latest else None
    ever = {e["version"] for e in store.history()}
    header = f"{'version':<27} {'created (UTC)':<20} {'CV RMSE':>8} {'baseline':>8} "
    # NDCG@10 of the list the version ships (EASE or the SVD blend).
    print(header + f"{'NDCG@10':>8}  promoted")
    for m in versions:
        cv = m.get("cv_metrics") or {}
        promoted = (
            "champion" if m["version"] == current else ("was" if m["version"] in ever else "no")
        )
        print(
            f"{m['version']:<27} {str(m.get('created_at', ''))[:19]:<20} "
            f"{_fmt(cv.get('rmse_mean')):>8} {_fmt(cv.get('baseline_rmse_mean')):>8} "
            f"{_fmt(cv.get('shipped_ndcg_mean', cv.get('blend_ndcg_mean'))):>8}  {promoted}"
        )
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    import json

    from recsys_assets.ml.artifacts import ArtifactError

    store = _store()
    try:
        _, manifest = store.load_version(args.version)  # verifies checksum/signature too
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    except ArtifactError as exc:
        raise UsageError(str(exc)) from exc
    latest = store.latest_manifest()
    history = [e for e in store.history() if e["version"] == args.version]
    print(json.dumps(manifest, indent=2, sort_keys=True))
    print(f"champion now: {'yes' if latest and latest['version'] == args.version else 'no'}")
    for entry in history:
        rolled = f", rolled back {entry['rolled_back_at']}" if entry.get("rolled_back_at") else ""
        print(f"promoted {entry['promoted_at']} ({entry['reason']}){rolled}")
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from recsys_assets.ml.artifacts import ArtifactError

    store = _store()
    previous = store.latest_manifest()
    try:
        manifest = store.promote(args.version, reason="manual: recsys models promote")
    except (ValueError, ArtifactError) as exc:
        raise UsageError(str(exc)) from exc
    was = previous["version"] if previous else "none"
    print(f"promoted {manifest['version']} (previous champion: {was})")
    print("rematerialize user_predictions to publish its suggestions")
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:
    from recsys_assets.ml.artifacts import ArtifactError

    try:
        old, new = _store().rollback()
    except ArtifactError as exc:
        raise UsageError(str(exc)) from exc
    print(f"rolled back from {old['version']} to {new['version']}")
    print("rematerialize user_predictions to publish its suggestions")
    return 0


def cmd_models_prune(args: argparse.Namespace) -> int:
    deleted = _store().prune(args.keep)
    print(f"deleted {len(deleted)} versions" + (f": {', '.join(deleted)}" if deleted else ""))
    return 0


def ranking_header(source: str, policy: object, manifest: dict | None = None) -> str:
    """How a recommendation list was ranked, in words (the `recsys recommend` header)."""
    if source == "svd":
        weights = policy.as_dict()
        return (
            "ranked by the champion's blend: "
            f"{weights['rating_weight']:g} x predicted rating + "
            f"{weights['popularity_weight']:g} x popularity + "
            f"{weights['taste_weight']:g} x taste similarity"
        )
    if source == "ease":
        ease = (manifest or {}).get("ranking_model") or {}
        lam = f", λ={ease['lambda']:g}" if "lambda" in ease else ""
        return f"ranked by the EASE ranking model (item-item{lam}) over the user's rated movies"
    if source == "popular":
        return (
            "ranked by popularity (ratings per movie): the user has fewer than "
            f"{policy.min_user_ratings} training ratings or is unknown to the model"
        )
    return f"ranked by {source or 'the model'}"


def cmd_recommend(args: argparse.Namespace) -> int:
    from recsys_assets.ml.artifacts import ArtifactError
    from recsys_assets.ml.ranking import RankingPolicy
    from recsys_assets.serving import Recommender

    database = open_db()
    recommender = Recommender(_store())
    try:
        manifest = recommender.manifest
        # As user_predictions: movies the user rated without a value are not suggested.
        unrated = database.read_unrated_pairs([args.user])["movie_id"].tolist()
        recs = recommender.recommend(args.user, n=args.n, exclude=tuple(unrated))
    except ArtifactError as exc:
        raise UsageError(str(exc)) from exc
    titles = database.movie_titles()
    source = recs[0].source if recs else "-"
    policy = RankingPolicy.from_manifest(manifest)
    print(f"user {args.user}: top {len(recs)} from model {manifest['version']}")
    print(f"# {ranking_header(source, policy, manifest)}; listed in that order (as user_predictions ships)")
    print("# score = the SVD's predicted rating for the user, shown for reference")
    print(f"{'rank':>4}  {'score':>5}  title")
    for rank, rec in enumerate(recs, 1):
        title = titles.get(rec.movie_id, f"movie {rec.movie_id}")
        print(f"{rank:>4}  {rec.score:>5.2f}  {title}")
    return 0


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
    run.add_argument(
        "--tuning",
        choices=["search", "fixed"],
        default="search",
        help="search the SVD's hyperparameters (default) or use the seed's as given",
    )
    run.add_argument(
        "--n-epochs", type=_positive, default=20, help="SVD epochs of the seed configuration (20)"
    )
    run.add_argument("--folds", type=_positive, default=4, help="cross-validation folds (4)")
    run.add_argument("--top-n", type=_positive, default=50, help="predictions per user (50)")
    run.add_argument(
        "--engine",
        choices=("compiled", "surprise"),
        default="compiled",
        help="how SVD is fitted: compiled (numba, default) or Surprise's own SVD.fit; "
        "the same model either way",
    )
    run.add_argument(
        "--no-demo-data",
        action="store_true",
        help="fail instead of generating demo data when the database is empty",
    )
    run.set_defaults(handler=cmd_run)

    models = sub.add_parser("models", help="model registry: list, show, promote, roll back")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    msub.add_parser("list", help="every saved version with its metrics").set_defaults(
        handler=cmd_models_list
    )
    show = msub.add_parser("show", help="a version's manifest and promotion history")
    show.add_argument("version")
    show.set_defaults(handler=cmd_models_show)
    promote = msub.add_parser("promote", help="make VERSION the champion (no gates)")
    promote.add_argument("version")
    promote.set_defaults(handler=cmd_models_promote)
    msub.add_parser("rollback", help="return to the previous champion").set_defaults(
        handler=cmd_models_rollback
    )
    prune = msub.add_parser("prune", help="delete old versions that were never champion")
    prune.add_argument("--keep", type=_positive, default=10, help="newest versions kept (10)")
    prune.set_defaults(handler=cmd_models_prune)

    rec = sub.add_parser("recommend", help="a user's top-N from the champion, with titles")
    rec.add_argument("user", type=int, help="user id")
    rec.add_argument("--n", type=_positive, default=10, help="number of movies (10)")
    rec.set_defaults(handler=cmd_recommend)

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
