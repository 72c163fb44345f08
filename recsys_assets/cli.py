"""The `recsys` command line: load data into the ratings database and run the pipeline.

    recsys demo-data [--users N --movies N --ratings N | --shape 25m] [--seed S] [--if-empty]
    recsys import-movielens PATH [--replace]
    recsys run [--tuning search|fixed --n-epochs N --folds K --top-n N --no-demo-data
                --max-drop-fraction F --rmse-tolerance T --wait]
    recsys models list | show VERSION | promote VERSION | rollback | prune [--keep K]
    recsys recommend USER [--n 10]

The database comes from RECSYS_DATABASE_URL / RECSYS_SCHEMA (embedded SQLite under RECSYS_HOME
by default). Exit codes: 0 success, 1 failed run or unexpected error, 2 bad input (usage
errors, missing paths, databases or tables, unusable data). Errors end with one `error:` line
naming the cause; `--verbose` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence

from recsys_assets.db import SchemaError
from recsys_assets.resources.ratings_db import RatingsDatabase
from recsys_assets.settings import Settings, SettingsError

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


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {number}")
    return number


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {number}")
    return number


def open_db(create: bool = False) -> RatingsDatabase:
    """The configured ratings database, checked: it exists and has the preset's ratings tables.

    `create`: create the tables this project owns when missing (native preset: ratings,
    movies) — for the embedded database and explicit loads (demo-data, import-movielens); the
    SQLite file itself only for the embedded database, never for RECSYS_DATABASE_URL.
    Otherwise a missing file, server or table is a UsageError naming it (URL masked) and the
    preset, and nothing is created.
    """
    import sqlalchemy.exc

    from recsys_assets.db import MissingDatabaseError

    try:
        settings = Settings.from_env()
        database = RatingsDatabase.from_env(settings)
    except ValueError as exc:  # an invalid RECSYS_* value, e.g. an unknown RECSYS_SCHEMA
        raise UsageError(str(exc)) from exc
    where = f"{database.safe_url()} (schema preset {database.preset})"
    try:
        if settings.database_url_configured:
            database.engine()  # a configured SQLite file must exist: never created here
        if not create:
            database.check_ratings_tables()
        # Tables this project owns (user_predictions; native: also ratings, movies).
        database.ensure_schema()
    except SchemaError as exc:
        raise UsageError(str(exc)) from exc
    except MissingDatabaseError as exc:
        raise UsageError(f"{exc} (schema preset {database.preset})") from exc
    except sqlalchemy.exc.DBAPIError as exc:  # server down, wrong password, not a database
        raise UsageError(f"cannot use the ratings database {where}: {db_error(exc)}") from exc
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


def db_error(exc: BaseException) -> str:
    """The driver's own message, one line, without SQLAlchemy's SQL echo and help link."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    return f"{type(orig).__name__}: {text}" if text else type(orig).__name__


def describe_error(exc: BaseException) -> str:
    """One line naming the cause of an unexpected error: file, variable, driver message."""
    import sqlalchemy.exc

    if isinstance(exc, OSError) and exc.filename is not None:
        target = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        hint = " (RECSYS_HOME must be writable)" if isinstance(exc, PermissionError) else ""
        return f"{exc.strerror or type(exc).__name__}: {target}{hint}"
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return db_error(exc)
    text = " ".join(str(exc).split())
    if isinstance(exc, ValueError | RuntimeError) and text:
        return text  # our own messages (bad RECSYS_* values, ...) name what is wrong
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
    database = open_db(create=True)
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


def _history_or_warn(store) -> list[dict]:
    from recsys_assets.ml.artifacts import ArtifactIntegrityError

    try:
        return store.history()
    except ArtifactIntegrityError as exc:
        print(f"warning: {exc}; promotion history unavailable", file=sys.stderr)
        return []


def _latest_pointer_problem(store) -> str | None:
    """Why latest.json cannot be used, or None (missing is not a problem: nothing promoted)."""
    from recsys_assets.ml.artifacts import ArtifactIntegrityError, read_latest_manifest

    try:
        read_latest_manifest(store.root_path)
    except (ArtifactIntegrityError, OSError) as exc:
        return str(exc)
    return None


def cmd_models_list(args: argparse.Namespace) -> int:
    """Every version, verified (size, SHA-256, signature with a key); broken ones marked."""
    store = _store()
    versions, unreadable = store.scan()
    if not versions and not unreadable:
        print(f"no model versions under {store.root_path}")
        return 0
    latest = store.latest_manifest()
    current = latest["version"] if latest else None
    ever = {e.get("version") for e in _history_or_warn(store) if isinstance(e, dict)}
    header = f"{'version':<27} {'created (UTC)':<20} {'CV RMSE':>8} {'baseline':>8} "
    print(header + f"{'NDCG@10':>8}  {'promoted':<8}  status")
    problems = dict(unreadable)
    rows = {m["version"]: m for m in versions}
    for version in sorted({*rows, *unreadable}):
        m = rows.get(version, {})
        cv = m.get("cv_metrics") or {}
        promoted = "champion" if version == current else ("was" if version in ever else "no")
        problem = problems.get(version) or (store.verify(m) if m else None)
        if problem:
            problems[version] = problem
        print(
            f"{version:<27} {str(m.get('created_at', ''))[:19]:<20} "
            f"{_fmt(cv.get('rmse_mean')):>8} {_fmt(cv.get('baseline_rmse_mean')):>8} "
            f"{_fmt(cv.get('shipped_ndcg_mean', cv.get('blend_ndcg_mean'))):>8}  {promoted:<8}  "
            + ("BROKEN" if problem else "ok")
        )
    for version, problem in sorted(problems.items()):
        print(f"BROKEN {version}: {problem}", file=sys.stderr)
    pointer = _latest_pointer_problem(store)
    if pointer:
        fallback = f"; champion per history: {current}" if current else ""
        print(
            f"BROKEN latest.json: {pointer}{fallback}. Recover with `recsys models promote "
            "VERSION` (or `recsys models rollback`)",
            file=sys.stderr,
        )
    return 1 if problems or pointer else 0


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
    history = [e for e in _history_or_warn(store) if e.get("version") == args.version]
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
    deleted = _store().prune(args.keep)  # also removes temp files of killed writes
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

    recommender = Recommender(_store())
    try:
        manifest = recommender.manifest  # no champion: say so before touching the database
    except ArtifactError as exc:
        raise UsageError(str(exc)) from exc
    database = open_db()
    # As user_predictions: movies the user rated without a value are not suggested.
    unrated = database.read_unrated_pairs([args.user])["movie_id"].tolist()
    recs = recommender.recommend(args.user, n=args.n, exclude=tuple(unrated))
    titles = database.movie_titles()
    source = recs[0].source if recs else "-"
    policy = RankingPolicy.from_manifest(manifest)
    print(f"user {args.user}: top {len(recs)} from model {manifest['version']}")
    header = ranking_header(source, policy, manifest)
    print(f"# {header}; listed in that order (as user_predictions ships)")
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
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="full tracebacks (also in run logs)"
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
    demo.add_argument(
        "--into-configured-database",
        action="store_true",
        help="allow writing demo data into the (existing) database of RECSYS_DATABASE_URL",
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
        help="fail instead of generating demo data into a new embedded database",
    )
    run.add_argument(
        "--max-drop-fraction",
        type=_fraction,
        help="ratings_volume check: allowed drop in ratings vs the last successful run (0.5)",
    )
    run.add_argument(
        "--rmse-tolerance",
        type=float,
        help="not_worse_than_champion gate: how much worse CV RMSE may be (0.01)",
    )
    run.add_argument(
        "--wait",
        action="store_true",
        help="wait for another `recsys run` on this RECSYS_HOME instead of refusing",
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
    except (UsageError, SettingsError) as exc:  # bad input: a command or a RECSYS_* value
        if args.verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # One line naming the cause; the traceback only when asked for.
        if args.verbose:
            traceback.print_exc()
        else:
            print("(run with --verbose for the traceback)", file=sys.stderr)
        print(f"error: {describe_error(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
