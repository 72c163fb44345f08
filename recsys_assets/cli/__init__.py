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

import sys
import traceback
from collections.abc import Sequence

from recsys_assets.cli.data import DEMO_SHAPES
from recsys_assets.cli.parser import build_parser, cmd_run, cmd_ui
from recsys_assets.settings import SettingsError
from recsys_assets.usage import UsageError, db_error

__all__ = ["DEMO_SHAPES", "build_parser", "cmd_run", "cmd_ui", "describe_error", "main"]


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
