"""The `recsys` argument parser: every command, its options and its handler."""

from __future__ import annotations

import argparse

from recsys_assets.choices import ENGINES, TUNING_MODES
from recsys_assets.cli.data import DEMO_SHAPES, cmd_demo_data, cmd_import_movielens
from recsys_assets.cli.models import (
    cmd_models_list,
    cmd_models_promote,
    cmd_models_prune,
    cmd_models_rollback,
    cmd_models_show,
)
from recsys_assets.cli.recommend import cmd_recommend


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


_INT64 = (-(2**63), 2**63 - 1)


def _user_id(value: str) -> int:
    # Ids are 64-bit integers in every table; a larger number is bad input, not a crash of
    # the database driver (OverflowError).
    number = int(value)
    if not _INT64[0] <= number <= _INT64[1]:
        raise argparse.ArgumentTypeError(f"user ids are 64-bit integers, got {number}")
    return number


def _scale(value: str) -> tuple[float, float]:
    from recsys_assets.settings import parse_rating_scale

    try:
        return parse_rating_scale(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {value!r}") from None


def cmd_run(args: argparse.Namespace) -> int:
    # Lazy: the Dagster definitions are heavy to import and only `run` needs them.
    from recsys_assets.cli.run import run_command

    return run_command(args)


def cmd_ui(args: argparse.Namespace) -> int:
    from recsys_assets.cli.instance import ui_command

    return ui_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys", description="Movie-recommendation training pipeline (Dagster + Surprise)."
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="full tracebacks (also in run logs)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_demo(sub)
    _add_movielens(sub)
    _add_run(sub)
    _add_models(sub)
    _add_recommend(sub)
    _add_ui(sub)
    return parser


def _add_demo(sub: argparse._SubParsersAction) -> None:
    """`recsys demo-data`: synthetic ratings."""
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


def _add_movielens(sub: argparse._SubParsersAction) -> None:
    """`recsys import-movielens PATH`."""
    ml = sub.add_parser("import-movielens", help="import a MovieLens dataset into the database")
    ml.add_argument("path", help="dataset directory (ml-100k, ml-latest, ...) or its ratings file")
    ml.add_argument(
        "--replace", action="store_true", help="delete the existing ratings before importing"
    )
    ml.set_defaults(handler=cmd_import_movielens)


def _add_run(sub: argparse._SubParsersAction) -> None:
    """`recsys run`: train once (the job's defaults unless given)."""
    run = sub.add_parser("run", help="train, evaluate and publish predictions once")
    # No defaults here: what is not given keeps the job's own (its Config classes), so
    # `recsys run` trains exactly as the UI's launchpad and the schedule do.
    run.add_argument(
        "--tuning",
        choices=TUNING_MODES,
        help="search the SVD's hyperparameters (the job's default) or use the seed's as given",
    )
    run.add_argument(
        "--n-epochs",
        type=_positive,
        help="SVD epochs of the seed configuration (default: the job's)",
    )
    run.add_argument("--folds", type=_positive, help="cross-validation folds (default: the job's)")
    run.add_argument("--top-n", type=_positive, help="predictions per user (default: the job's)")
    run.add_argument(
        "--eval-max-ratings",
        type=_non_negative,
        metavar="N",
        help="evaluation budget: the search and the CV run on at most N ratings, a seeded "
        "sample of whole users (0: every rating; default: the job's, 1,000,000); the shipped "
        "models always fit every rating",
    )
    run.add_argument(
        "--engine",
        choices=ENGINES,
        help="how SVD is fitted: compiled (numba, the job's default) or Surprise's own "
        "SVD.fit; the same model either way",
    )
    run.add_argument(
        "--no-demo-data",
        action="store_true",
        help="fail instead of generating demo data into a new embedded database",
    )
    run.add_argument(
        "--rating-scale",
        type=_scale,
        metavar="MIN,MAX",
        help="valid ratings, e.g. 1,10 (RECSYS_RATING_SCALE, else 0.5,5); "
        "rows outside it are dropped, and a run that would drop many fails",
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


def _add_models(sub: argparse._SubParsersAction) -> None:
    """`recsys models ...`: the registry."""
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
    prune.add_argument(
        "--keep", type=_positive, help="newest versions kept (default: as model_artifact's)"
    )
    prune.set_defaults(handler=cmd_models_prune)


def _add_recommend(sub: argparse._SubParsersAction) -> None:
    """`recsys recommend USER`."""
    rec = sub.add_parser("recommend", help="a user's top-N from the champion, with titles")
    rec.add_argument("user", type=_user_id, help="user id")
    rec.add_argument("--n", type=_positive, default=10, help="number of movies (10)")
    rec.set_defaults(handler=cmd_recommend)


def _add_ui(sub: argparse._SubParsersAction) -> None:
    """`recsys ui`: dagster dev on this project."""
    ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on this project")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    ui.add_argument("--port", type=_positive, default=3000, help="port (3000)")
    ui.set_defaults(handler=cmd_ui)
