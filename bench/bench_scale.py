"""Scale benchmark: the whole graph at 100K (ml-100k) and 1M / 5M / 25M generated ratings.

    python bench/bench_scale.py --ml100k ../shared/datasets/ml-100k/u.data --sizes 100k,1m
    nice python bench/bench_scale.py --sizes 25m --json out.json
    python bench/bench_scale.py --sizes 25m --executor multiprocess --folds-per-step 4

Per size, each in its own subprocess (so peak RSS is its own):

1. setup: `recsys demo-data`'s generator and bulk insert into a fresh SQLite file (or the
   ml-100k import), timed;
2. the graph: `training_job` in process (the `recsys run` path: CV folds forked in one step)
   or, with `--executor multiprocess`, a step per process as launched runs execute it; with
   per-asset seconds, the largest process's peak RSS and the whole process tree's peak PSS;
3. seed-style baseline, in the same run: `model.predict(u, i)` + one INSERT per pair, the
   seed's loop, on a sample of users (all movies each), extrapolated to all pairs (labelled);
   and the seed's Surprise path (`Dataset.load_from_df` + KFold `cross_validate` + fit) run in
   full at sizes <= `--seed-full-max`, else extrapolated per rating from the largest measured
   size in this run (labelled);
4. where the memory goes in Surprise's structures (at sizes <= 5M): RSS growth and pickle
   size/time of `Dataset.load_from_df` vs `CompactDataset`, and of a `Trainset` vs
   `CompactTrainset`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED_SAMPLE_USERS = 40


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


class TreeMemory:
    """Peak memory of this process and all its descendants together, sampled every second.

    The sum of PSS (proportional set size, /proc/PID/smaps_rollup): pages a forked worker
    shares with its parent count once, split between them. ru_maxrss only gives the largest
    single process.
    """

    def __init__(self, interval: float = 1.0) -> None:
        import threading

        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _tree(root: int) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except OSError:
                    continue
                children.setdefault(ppid, []).append(int(entry))
        tree, todo = [], [root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    @staticmethod
    def _pss_kb(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            total = sum(self._pss_kb(p) for p in self._tree(os.getpid())) / 1024
            self.peak_mb = max(self.peak_mb, total)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def setup(size: str, home: Path, ml100k: str | None) -> dict:
    os.environ["RECSYS_HOME"] = str(home)
    os.environ.pop("RECSYS_DATABASE_URL", None)
    from recsys_assets.db import RatingsStore

    db = RatingsStore.from_env()
    db.ensure_schema()
    t0 = time.perf_counter()
    if size == "100k":
        from recsys_assets.data.movielens import read_movielens

        movies, ratings = read_movielens(ml100k)
    else:
        from recsys_assets.cli import DEMO_SHAPES  # `recsys demo-data --shape`
        from recsys_assets.data.demo import generate_demo_ratings

        users, n_movies, n = DEMO_SHAPES[size]
        movies, ratings = generate_demo_ratings(users, n_movies, n, seed=0)
    generate = time.perf_counter() - t0
    t1 = time.perf_counter()
    db.insert_movies(movies)
    db.insert_ratings(ratings)
    insert = time.perf_counter() - t1
    # The compiled kernels' one-time compile, into this home's numba cache (as a machine's
    # first run does once): the graph then loads them, as every later run does.
    from recsys_assets.ml.compiled import load_compiled

    compile_seconds = load_compiled()
    return {
        "ratings": len(ratings),
        "generate_seconds": generate,
        "insert_seconds": insert,
        "numba_compile_seconds": compile_seconds,
        "insert_rows_per_s": len(ratings) / insert,
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_graph(home: Path, folds: int, executor: str, folds_per_step: int) -> dict:
    # The same run as bench_pipeline's graph side (this script's folder is on sys.path).
    from bench_pipeline import execute_graph

    with TreeMemory() as memory:
        result, total, steps = execute_graph(home, folds, executor, folds_per_step)

    def meta(node: str) -> dict:
        return {
            k: v.value
            for k, v in result.asset_materializations_for_node(node)[0].metadata.items()
            if isinstance(v.value, int | float | str)
        }

    pred = meta("user_predictions")
    return {
        "total": total,
        "steps": steps,
        "cv_rmse": meta("cv_report")["rmse_mean"],
        "step_peak_rss_mb": {
            n: meta(n).get("peak_rss_mb")
            for n in ("ratings_df", "surprise_dataset", "svd_model", "user_predictions")
        },
        "predictions": {
            k: pred[k]
            for k in ("users", "rows", "pairs_scored", "score_seconds", "write_seconds", "seconds")
        },
        "peak_rss_mb": _peak_rss_mb(),
        "peak_tree_pss_mb": memory.peak_mb,
    }


def run_phase(home: Path, phase: str, folds: int) -> dict:
    """One phase of the graph in its own process (per-step mode), values via the IO manager.

    assets:<a,b>   materialize those assets (upstream values loaded from storage)
    predictions    top-N for every user from the stored svd_model + the DB write (the
                   user_predictions computation without the CV-gated artifact export)
    fold:<k>       one CV fold's RMSE/MAE (`cross_validate_svd`) on the stored surprise_dataset
    """
    os.environ["RECSYS_HOME"] = str(home)
    os.environ.pop("DAGSTER_HOME", None)  # never the caller's instance
    import dagster as dg

    from recsys_assets import definitions
    from recsys_assets.assets.config import training_run_config
    from recsys_assets.cli.instance import prepare_dagster_home

    prepare_dagster_home()

    start = time.perf_counter()
    out: dict = {"phase": phase}
    if phase.startswith("assets:"):
        names = phase.split(":", 1)[1].split(",")
        config = training_run_config(n_folds=folds)
        config["ops"] = {k: v for k, v in config["ops"].items() if k in names}
        config["loggers"] = {"console": {"config": {"log_level": "WARNING"}}}
        with dg.DagsterInstance.get() as instance:
            result = dg.materialize(
                definitions.all_assets,
                selection=names,
                resources=definitions.build_resources(executor="in_process"),
                run_config=config,
                instance=instance,
            )
        out["steps"] = {
            e.step_key: e.event_specific_data.duration_ms / 1000
            for e in result.all_events
            if e.event_type_value == "STEP_SUCCESS"
        }
        out["metadata"] = {
            n: {
                k: v.value
                for k, v in result.asset_materializations_for_node(n)[0].metadata.items()
                if isinstance(v.value, int | float)
            }
            for n in names
        }
    elif phase == "predictions":
        from recsys_assets.db import RatingsStore
        from recsys_assets.ml.arrays import unique
        from recsys_assets.ml.factors import SVDFactors
        from recsys_assets.ml.ranking import RankingPolicy, ShippedModel, item_counts, rank_users

        storage = home / "storage"
        with open(storage / "svd_model.pkl", "rb") as f:
            model = pickle.load(f)
        with open(storage / "ratings_df.pkl", "rb") as f:
            ratings = pickle.load(f)
        load = time.perf_counter() - start
        t0 = time.perf_counter()
        factors = SVDFactors.from_svd(model)
        del model
        users = unique(ratings["user_id"].to_numpy())
        rated = (ratings["user_id"].to_numpy(), ratings["movie_id"].to_numpy())
        counts = item_counts(factors.raw_iids, rated[1])
        # Ranked by the estimate alone (the seed's ranking).
        preds = rank_users(ShippedModel(factors, counts, RankingPolicy()), users, rated, n=50)
        score = time.perf_counter() - t0
        t1 = time.perf_counter()
        rows = RatingsStore.from_env().replace_predictions(preds, "bench")
        write = time.perf_counter() - t1
        pairs = int(users.size) * factors.n_items
        out.update(
            load_seconds=load,
            score_seconds=score,
            write_seconds=write,
            pairs=pairs,
            rows=rows,
            pairs_per_s=pairs / (score + write),
        )
    elif phase.startswith("fold:"):
        from recsys_assets.ml.selection.cross_validation import CVSettings, cross_validate_svd
        from recsys_assets.ml.training import SVDParams

        with open(home / "storage" / "surprise_dataset.pkl", "rb") as f:
            dataset = pickle.load(f)
        out["load_seconds"] = time.perf_counter() - start
        fold = int(phase.split(":")[1])
        out["fold"] = (
            cross_validate_svd(
                dataset,
                SVDParams(),
                CVSettings(folds, 42, n_jobs=1, min_user_ratings=None),
                folds=[fold],
            )
            .iloc[0]
            .to_dict()
        )
    out["seconds"] = time.perf_counter() - start
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def seed_pairs(home: Path, sample_users: int) -> dict:
    """The seed's per-pair loop on a sample of users, with the model the graph just exported."""
    os.environ["RECSYS_HOME"] = str(home)
    from recsys_assets.ml.artifacts import ArtifactStore

    store = ArtifactStore.from_env()
    if store.latest_manifest() is not None:
        model, _ = store.load_latest()
    else:  # per-step mode: no exported artifact, the fitted model is in the IO storage
        with open(home / "storage" / "svd_model.pkl", "rb") as f:
            model = pickle.load(f)
    con = sqlite3.connect(home / "ratings.db")
    users = [
        u
        for (u,) in con.execute(
            "SELECT DISTINCT user_id FROM ratings ORDER BY user_id LIMIT ?", (sample_users,)
        )
    ]
    all_users = con.execute("SELECT COUNT(DISTINCT user_id) FROM ratings").fetchone()[0]
    movies = [m for (m,) in con.execute("SELECT DISTINCT movie_id FROM ratings")]
    marks = ",".join("?" * len(users))
    rated = set(
        con.execute(f"SELECT user_id, movie_id FROM ratings WHERE user_id IN ({marks})", users)
    )
    con.execute("CREATE TABLE seed_predictions (user_id INTEGER, movie_id INTEGER, score REAL)")
    from bench_pipeline import seed_predict_and_insert

    t0 = time.perf_counter()
    pairs = seed_predict_and_insert(con, model, users, movies, rated)
    seconds = time.perf_counter() - t0
    return {
        "sample_users": len(users),
        "sample_pairs": pairs,
        "seconds": seconds,
        "pairs_per_s": pairs / seconds,
        "all_pairs_estimate": all_users * len(movies),
    }


def seed_training(home: Path, folds: int) -> dict:
    """The seed's Surprise path: load_from_df, KFold cross_validate, fit on everything."""
    import pandas as pd
    from surprise import SVD, Dataset, Reader
    from surprise.model_selection import cross_validate

    con = sqlite3.connect(home / "ratings.db")
    t0 = time.perf_counter()
    df = pd.read_sql("SELECT user_id, movie_id, rating FROM ratings WHERE active = 1", con)
    data = Dataset.load_from_df(df, Reader(rating_scale=(df.rating.min(), df.rating.max())))
    load = time.perf_counter() - t0
    t1 = time.perf_counter()
    cv = cross_validate(SVD(n_epochs=20, lr_all=0.005, reg_all=0.02), data, cv=folds)
    cv_seconds = time.perf_counter() - t1
    t2 = time.perf_counter()
    SVD(n_epochs=20, lr_all=0.005, reg_all=0.02).fit(data.build_full_trainset())
    fit = time.perf_counter() - t2
    return {
        "ratings": len(df),
        "load_seconds": load,
        "cv_seconds": cv_seconds,
        "fit_seconds": fit,
        "total": load + cv_seconds + fit,
        "cv_rmse": float(cv["test_rmse"].mean()),
        "peak_rss_mb": _peak_rss_mb(),
    }


def structures(home: Path) -> dict:
    """RSS growth and pickle cost of Surprise's structures vs the compact ones."""
    import pandas as pd
    from surprise import Dataset, Reader

    from recsys_assets.ml.datasets import CompactDataset

    con = sqlite3.connect(home / "ratings.db")
    df = pd.read_sql("SELECT user_id, movie_id, rating FROM ratings WHERE active = 1", con)
    df = df.astype({"user_id": "int32", "movie_id": "int32", "rating": "float32"})
    reader = Reader(rating_scale=(1, 5))
    out: dict = {"ratings": len(df), "ratings_df_mb": df.memory_usage().sum() / 2**20}

    def measure(name: str, build) -> object:
        gc.collect()
        before, t0 = _rss_mb(), time.perf_counter()
        obj = build()
        seconds = time.perf_counter() - t0
        gc.collect()
        t1 = time.perf_counter()
        blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        dump = time.perf_counter() - t1
        t2 = time.perf_counter()
        pickle.loads(blob)
        load = time.perf_counter() - t2
        out[name] = {
            "build_seconds": seconds,
            "rss_growth_mb": _rss_mb() - before,
            "pickle_mb": len(blob) / 2**20,
            "dump_seconds": dump,
            "load_seconds": load,
        }
        return obj

    surprise_ds = measure("surprise.Dataset", lambda: Dataset.load_from_df(df, reader))
    measure("surprise.Trainset", surprise_ds.build_full_trainset)
    del surprise_ds
    gc.collect()
    compact = measure("CompactDataset", lambda: CompactDataset.from_df(df, reader))
    measure("CompactTrainset", compact.build_full_trainset)
    return out


def _child(mode: str, home: Path, **kw: object) -> dict:
    args = [sys.executable, __file__, "--child", mode, "--home", str(home)]
    for k, v in kw.items():
        if v is not None:
            args += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{mode} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _load() -> str:
    return open("/proc/loadavg").read().split(" ", 3)[:3].__str__()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ml100k", help="ml-100k u.data (or directory) for the 100k size")
    parser.add_argument("--sizes", default="100k,1m", help="comma list of 100k,1m,5m,25m")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed-full-max", type=int, default=1_000_000)
    parser.add_argument(
        "--executor",
        choices=["in_process", "multiprocess"],
        default="in_process",
        help="how the graph's steps run: in one process (`recsys run`) or one process per "
        "step (launched and scheduled runs)",
    )
    parser.add_argument(
        "--folds-per-step", type=int, default=0, help="cv_report's folds_per_step (0 = auto)"
    )
    parser.add_argument("--json", type=Path, help="also write all figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument(
        "--per-step",
        action="store_true",
        help="run the graph phase by phase, each in its own process, printing each as it ends "
        "(for sizes whose end-to-end run may not fit the time available)",
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        default=PHASES,
        help="per-step mode: which phases, in order (default: %(default)s)",
    )
    args = parser.parse_args()
    if args.child:
        fns = {
            "setup": lambda: setup(args.size, args.home, args.ml100k),
            "graph": lambda: run_graph(args.home, args.folds, args.executor, args.folds_per_step),
            "seed_pairs": lambda: seed_pairs(args.home, SEED_SAMPLE_USERS),
            "seed_training": lambda: seed_training(args.home, args.folds),
            "structures": lambda: structures(args.home),
            "phase": lambda: run_phase(args.home, args.phase, args.folds),
        }
        print(json.dumps(fns[args.child]()))
        return 0

    sizes = args.sizes.split(",")
    if "100k" in sizes and not args.ml100k:
        parser.error("--ml100k PATH is needed for the 100k size")
    results: dict = {"cpus": os.cpu_count(), "sizes": {}}
    seed_us_per_rating = None  # seed-style train cost per rating, from the largest full run
    for size in sizes:
        res: dict = {"load_before": _load()}
        with tempfile.TemporaryDirectory(prefix=f"recsys-scale-{size}-") as tmp:
            home = Path(tmp)
            print(f"[{size}] setup ...", file=sys.stderr, flush=True)
            res["setup"] = _child("setup", home, size=size, ml100k=args.ml100k)
            n = res["setup"]["ratings"]
            if args.per_step:
                res["phases"] = _per_step(home, args, res, results, size)
                continue
            print(f"[{size}] graph ...", file=sys.stderr, flush=True)
            res["graph"] = _child(
                "graph",
                home,
                folds=args.folds,
                executor=args.executor,
                folds_per_step=args.folds_per_step,
            )
            res["executor"] = args.executor
            print(f"[{size}] seed-style per-pair loop (sample) ...", file=sys.stderr, flush=True)
            res["seed_pairs"] = _child("seed_pairs", home)
            if n <= args.seed_full_max:
                print(f"[{size}] seed-style training ...", file=sys.stderr, flush=True)
                res["seed_training"] = _child("seed_training", home, folds=args.folds)
                seed_us_per_rating = res["seed_training"]["total"] / n * 1e6
            elif seed_us_per_rating is not None:
                res["seed_training_extrapolated"] = {"total": seed_us_per_rating * n / 1e6}
            if n <= 5_000_000:
                print(f"[{size}] structures ...", file=sys.stderr, flush=True)
                res["structures"] = _child("structures", home)
        res["load_after"] = _load()
        results["sizes"][size] = res
        _report(size, res)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    return 0


PHASES = [
    "assets:ratings_df",
    "assets:surprise_dataset",
    "assets:svd_model",
    "predictions",
    "fold:1",
    "assets:cv_report",
]


def _per_step(home: Path, args: argparse.Namespace, res: dict, results: dict, size: str) -> list:
    """Phases one by one; every finished phase is printed and saved before the next starts."""
    phases: list = []
    res["phases"] = phases
    results["sizes"][size] = res
    for phase in args.phases:
        print(f"[{size}] {phase} ... (load {_load()})", file=sys.stderr, flush=True)
        done = _child("phase", home, phase=phase, folds=args.folds)
        done["load_after"] = _load()
        phases.append(done)
        print(json.dumps(done), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        if phase == "predictions":
            print(f"[{size}] seed-style per-pair loop (sample) ...", file=sys.stderr, flush=True)
            res["seed_pairs"] = _child("seed_pairs", home)
            print(json.dumps(res["seed_pairs"]), flush=True)
    return phases


def _report(size: str, res: dict) -> None:
    g, sp, st = res["graph"], res["seed_pairs"], res["setup"]
    pred = g["predictions"]
    rate = pred["pairs_scored"] / pred["seconds"]
    seed_pairs_seconds = sp["all_pairs_estimate"] / sp["pairs_per_s"]
    print(
        f"\n=== {size}: {st['ratings']:,} ratings  (load avg before {res['load_before']}, "
        f"after {res['load_after']}) ==="
    )
    print(
        f"setup: generate {st['generate_seconds']:.1f}s, insert {st['insert_seconds']:.1f}s "
        f"({st['insert_rows_per_s']:,.0f} rows/s), compiled SVD fit compiled once "
        f"{st.get('numba_compile_seconds', float('nan')):.1f}s (not in the graph's time)"
    )
    print(
        f"graph end to end {g['total']:.1f}s, peak RSS {g['peak_rss_mb']:,.0f} MB (largest "
        f"process), {g['peak_tree_pss_mb']:,.0f} MB (all processes, PSS), "
        f"CV RMSE {g['cv_rmse']:.4f}"
    )
    for step, secs in g["steps"].items():
        print(f"  {step:<40}{secs:>9.1f}s")
    print(
        f"predictions: {pred['pairs_scored']:,} pairs, {pred['rows']:,} rows, "
        f"score {pred['score_seconds']:.1f}s + write {pred['write_seconds']:.1f}s "
        f"= {rate:,.0f} pairs/s"
    )
    print(
        f"seed-style per-pair loop: {sp['pairs_per_s']:,.0f} pairs/s on {sp['sample_users']} "
        f"users (sample); all {sp['all_pairs_estimate']:,} pairs would take "
        f"{seed_pairs_seconds:,.0f}s (EXTRAPOLATED); ratio {rate / sp['pairs_per_s']:,.0f}x"
    )
    if "seed_training" in res:
        s = res["seed_training"]
        print(
            f"seed-style training (measured): load {s['load_seconds']:.1f}s, "
            f"cv {s['cv_seconds']:.1f}s, fit {s['fit_seconds']:.1f}s, "
            f"peak RSS {s['peak_rss_mb']:,.0f} MB, CV RMSE {s['cv_rmse']:.4f}"
        )
        seed_total = s["total"] + seed_pairs_seconds
        label = "training measured + per-pair loop EXTRAPOLATED"
    elif "seed_training_extrapolated" in res:
        seed_total = res["seed_training_extrapolated"]["total"] + seed_pairs_seconds
        label = "training EXTRAPOLATED per rating from a smaller size + per-pair loop EXTRAPOLATED"
    else:
        seed_total = None
    if seed_total:
        print(
            f"seed-style end to end ≈ {seed_total:,.0f}s ({label}); "
            f"graph is {seed_total / g['total']:,.1f}x faster"
        )
    for name, m in (res.get("structures") or {}).items():
        if isinstance(m, dict):
            print(
                f"  {name:<20} build {m['build_seconds']:6.1f}s  RSS +{m['rss_growth_mb']:7.0f} MB"
                f"  pickle {m['pickle_mb']:7.0f} MB  dump {m['dump_seconds']:5.1f}s"
                f"  load {m['load_seconds']:5.1f}s"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
