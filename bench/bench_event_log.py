"""Dagster's bookkeeping per training run on the embedded (SQLite) instance.

    nice python bench/bench_event_log.py /work/shared/datasets/ml-100k [--runs 2]
        [--instance NAME=extra.yaml ...]

The embedded instance as `recsys run` prepares it (Dagster's default SQLite storage) is the
variant `default`; each `--instance NAME=FILE` adds a variant whose dagster.yaml also holds
FILE's settings (e.g. another `event_log_storage` class). Each variant gets a fresh RECSYS_HOME
with the ratings (`recsys import-movielens`); then `recsys run`'s in-process path
(`cli.run.execute_training`) runs `training_job` once per round in a child process, the
variants taking turns so a change in the machine's load hits them alike. Reported per run:
wall time, events stored, and the seconds spent inside the event log's `store_event` (what a
storage class changes, and what fewer events save), with the load average beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(home: Path) -> dict:
    """One `training_job` run (what `recsys run` executes) on the instance under `home`."""
    os.environ["RECSYS_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster_home")
    import dagster as dg

    from recsys_assets.cli.instance import prepare_dagster_home
    from recsys_assets.cli.run import RunOptions, cli_run_config, execute_training

    run_config = cli_run_config(RunOptions(log_level="WARNING"))
    prepare_dagster_home()  # the embedded dagster.yaml, unless the variant wrote its own
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        spent = {"seconds": 0.0, "events": 0}
        kinds: dict[str, int] = {}
        store_event = storage.store_event

        def timed_store_event(event, *args, **kwargs):
            # Bench-only instrumentation: the time this storage class takes per event.
            start = time.perf_counter()
            try:
                return store_event(event, *args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - start
                spent["events"] += 1
                kind = event.dagster_event.event_type_value if event.dagster_event else "LOG"
                kinds[kind] = kinds.get(kind, 0) + 1

        storage.store_event = timed_store_event
        start = time.perf_counter()
        result = execute_training(instance, run_config, "in_process")
        wall = time.perf_counter() - start
    if not result.success:
        raise SystemExit(f"training_job failed (run {result.run_id})")
    return {
        "class": type(storage).__name__,
        "wall": wall,
        "store_seconds": spent["seconds"],
        "events": spent["events"],
        "steps": len({e.step_key for e in result.all_events if e.step_key}),
        "kinds": kinds,
        "load": os.getloadavg()[0],
    }


def _embedded_settings() -> str:
    """The embedded instance's settings without its header line, so `recsys run` keeps the file."""
    from recsys_assets.cli.instance import EMBEDDED_DAGSTER_YAML

    return "\n".join(EMBEDDED_DAGSTER_YAML.splitlines()[1:])


def _recsys(home: Path, *args: str) -> None:
    env = {**os.environ, "RECSYS_HOME": str(home)}
    env.pop("RECSYS_DATABASE_URL", None)
    recsys = Path(sys.executable).with_name("recsys")
    subprocess.run([str(recsys), *args], check=True, env=env, capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ratings", nargs="?", help="ml-100k directory or u.data")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a variant: the embedded dagster.yaml plus FILE's YAML (repeatable)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    if not args.ratings:
        parser.error("give the MovieLens path, e.g. /work/shared/datasets/ml-100k")
    extras = {"default": ""}
    for spec in args.instance:
        name, sep, path = spec.partition("=")
        if not sep or name in extras:
            parser.error(f"--instance {spec!r}: give NAME=FILE with a new NAME")
        extras[name] = Path(path).read_text()
    storages = list(extras)

    embedded = _embedded_settings()
    with tempfile.TemporaryDirectory(prefix="recsys-bench-eventlog-") as tmp:
        # One numba cache for every home: the compiled fit is built once, not per storage.
        os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tmp) / "numba_cache"))
        homes = {}
        for storage in storages:
            home = homes[storage] = Path(tmp) / storage
            _recsys(home, "import-movielens", args.ratings)
            if extras[storage]:
                # Written before the run: prepare_dagster_home keeps a file it did not write.
                (home / "dagster_home").mkdir(parents=True)
                (home / "dagster_home" / "dagster.yaml").write_text(
                    f"{embedded}\n{extras[storage].format(home=home)}"
                )
        rows = []
        for round_ in range(1, args.runs + 1):
            for storage in storages:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(homes[storage])],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append({"storage": storage, "round": round_, **row})
                print(
                    f"round {round_} {storage:<13} {row['class']:<34} wall {row['wall']:6.1f} s"
                    f"  steps {row['steps']:3d}  events {row['events']:4d}"
                    f"  store_event {row['store_seconds']:5.2f} s"
                    f" ({1000 * row['store_seconds'] / max(row['events'], 1):.1f} ms/event)"
                    f"  load {row['load']:.2f}",
                    flush=True,
                )
    kinds = rows[-1]["kinds"]
    print(
        "\nevents of the last run by type: "
        + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    )
    print(f"\n{'variant':<14}{'runs':>5}{'wall s':>9}{'events':>8}{'store_event s':>15}")
    for storage in storages:
        mine = [r for r in rows if r["storage"] == storage]
        mean = {k: sum(r[k] for r in mine) / len(mine) for k in ("wall", "events", "store_seconds")}
        print(
            f"{storage:<14}{len(mine):>5}{mean['wall']:>9.1f}{mean['events']:>8.0f}"
            f"{mean['store_seconds']:>15.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
