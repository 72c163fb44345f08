"""`recsys run` against one plain Surprise `SVD.fit` of the same ratings, back to back in one run.

    python bench/bench_budget.py --db /tmp/ratings-5m.db            # an existing ratings DB
    python bench/bench_budget.py --shape 1m                          # generated first
    python bench/bench_budget.py --db DB --skip-plain --json out.json

Issue 24's baseline: "5M through `recsys run` <= 1.0x one plain
`surprise.SVD(n_epochs=20, lr_all=0.005, reg_all=0.02).fit`". Both sides run in their own
subprocess on a fresh RECSYS_HOME holding a copy of the same SQLite ratings file:

1. plain: the active ratings (`RatingsStore.read_ratings`), `Dataset.load_from_df`,
   `build_full_trainset`, then the timed `SVD.fit` (Surprise's own Cython loop);
2. run: the `recsys` command itself (`recsys run`, in process, defaults), with this process
   sampling every process of its tree from /proc every `--interval` seconds: the summed PSS
   (a forked worker's pages shared with its parent count once) and the largest RSS.

Per step (from the run's Dagster event log: STEP_START .. STEP_SUCCESS) it prints the
seconds, the tree's PSS when the step started, its peak during the step, and the most
processes seen. The machine's load average is printed before and after: other work on the
machine stretches both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_scale import TreeMemory  # this script's folder is on sys.path

SVD_KW = {"n_epochs": 20, "lr_all": 0.005, "reg_all": 0.02}


def _load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across exec from a
    bigger parent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class TreeSampler:
    """(time, summed PSS MB, largest RSS MB, processes, summed RSS MB) of `root` and its
    descendants. Summed RSS counts the pages forked workers share with their parent once per
    process: an overestimate, printed to compare with figures measured that way."""

    def __init__(self, root: int, interval: float) -> None:
        self.root, self.interval = root, interval
        self.samples: list[tuple[float, float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _rollup(pid: int) -> tuple[int, int]:
        rss = pss = 0
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss = int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss = int(line.split()[1])
        except OSError:
            pass
        return rss, pss

    def _run(self) -> None:
        while True:
            pids = TreeMemory._tree(self.root)  # this process's tree, from /proc
            stats = [self._rollup(p) for p in pids]
            self.samples.append(
                (
                    time.time(),
                    sum(p for _, p in stats) / 1024,
                    max((r for r, _ in stats), default=0) / 1024,
                    sum(1 for r, _ in stats if r),
                    sum(r for r, _ in stats) / 1024,
                )
            )
            if self._stop.wait(self.interval):
                return


def plain_fit(home: Path) -> dict:
    """One plain Surprise SVD.fit of the active ratings (the read and build timed apart)."""
    os.environ["RECSYS_HOME"] = str(home)
    from surprise import SVD, Dataset, Reader

    from recsys_assets.db import RatingsStore

    t0 = time.perf_counter()
    df = RatingsStore.from_env().read_ratings()[["user_id", "movie_id", "rating"]]
    read = time.perf_counter() - t0
    t1 = time.perf_counter()
    data = Dataset.load_from_df(df, Reader(rating_scale=(1, 5)))
    trainset = data.build_full_trainset()
    build = time.perf_counter() - t1
    t2 = time.perf_counter()
    SVD(**SVD_KW, random_state=0).fit(trainset)
    fit = time.perf_counter() - t2
    return {
        "ratings": len(df),
        "read_seconds": read,
        "build_seconds": build,
        "fit_seconds": fit,
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_recsys(home: Path, interval: float, extra: list[str]) -> dict:
    env = dict(os.environ, RECSYS_HOME=str(home))
    for name in ("DAGSTER_HOME", "RECSYS_DATABASE_URL", "RECSYS_EXECUTOR"):
        env.pop(name, None)
    recsys = Path(sys.executable).with_name("recsys")
    command = [str(recsys), "run", *extra]
    log = home / "recsys-run.log"
    with open(log, "w") as out:
        start = time.time()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=out)
        sampler = TreeSampler(proc.pid, interval)
        code = proc.wait()
        wall = time.time() - start
        sampler.stop()
    text = log.read_text()
    if code:
        sys.exit(f"recsys run failed ({code}); log: {log}\n{text[-3000:]}")
    return {
        "wall_seconds": wall,
        "start": start,
        "samples": sampler.samples,
        "steps": _step_windows(home / "dagster_home"),
        "summary": [ln for ln in text.splitlines() if not ln.startswith(("20", " "))][-8:],
    }


def _step_windows(dagster_home: Path) -> dict[str, tuple[float, float]]:
    """{step key: (start, end)} unix times of the newest run's steps, from its event log."""
    code = (
        "import json, dagster as dg\n"
        "with dg.DagsterInstance.get() as i:\n"
        "    run = i.get_runs(limit=1)[0]\n"
        "    w = {}\n"
        "    for e in i.all_logs(run.run_id):\n"
        "        k, t = e.step_key, e.dagster_event and e.dagster_event.event_type_value\n"
        "        if t == 'STEP_START': w[k] = [e.timestamp, None]\n"
        "        elif t in ('STEP_SUCCESS', 'STEP_FAILURE') and k in w: w[k][1] = e.timestamp\n"
        "    print(json.dumps(w))\n"
    )
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return {k: tuple(v) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def step_memory(run: dict) -> list[dict]:
    rows = []
    samples = run["samples"]
    for step, (begin, end) in sorted(run["steps"].items(), key=lambda kv: kv[1][0]):
        end = end or begin
        inside = [s for s in samples if begin <= s[0] <= end]
        before = [s for s in samples if s[0] <= begin]
        at_start = before[-1][1] if before else 0.0
        rows.append(
            {
                "step": step,
                "seconds": end - begin,
                "pss_start_mb": at_start,
                "pss_peak_mb": max((s[1] for s in inside), default=at_start),
                "rss_max_mb": max((s[2] for s in inside), default=0.0),
                "processes": max((s[3] for s in inside), default=0),
            }
        )
    return rows


def timeline(run: dict, log: Path, min_change_mb: float) -> list[dict]:
    """Peak PSS between one log line of the run and the next: where inside a step the memory
    goes. Only lines whose interval peak moved by `min_change_mb` from the last one shown."""
    from datetime import datetime

    lines = []
    for text in log.read_text().splitlines():
        try:  # Dagster's console format: "2026-12-06 20:19:09,309 - dagster - INFO - ..."
            stamp = datetime.strptime(text[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        parts = text.split(" - ", 5)
        lines.append((stamp, " - ".join(parts[4:])[:150] if len(parts) > 4 else text[24:150]))
    out, shown = [], -1e9
    samples = run["samples"]
    for (t0, message), (t1, _) in zip(lines, [*lines[1:], (float("inf"), "")], strict=True):
        inside = [s for s in samples if t0 <= s[0] < t1]
        if not inside:
            continue
        peak = max(s[1] for s in inside)
        if abs(peak - shown) >= min_change_mb:
            procs = max(s[3] for s in inside)
            out.append({"t": t0 - run["start"], "pss_peak_mb": peak, "procs": procs})
            out[-1]["log"] = message
            shown = peak
    return out


def _child(mode: str, home: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--home", str(home)],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        sys.exit(f"{mode} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _prepare(home: Path, db: Path | None, shape: str | None) -> None:
    if db is not None:
        shutil.copyfile(db, home / "ratings.db")
        return
    env = dict(os.environ, RECSYS_HOME=str(home))
    env.pop("RECSYS_DATABASE_URL", None)
    recsys = Path(sys.executable).with_name("recsys")
    subprocess.run([str(recsys), "demo-data", "--shape", shape], env=env, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--db", type=Path, help="a SQLite ratings file (native schema) to copy")
    source.add_argument("--shape", choices=["100k", "1m", "5m", "25m"], help="generate this")
    parser.add_argument("--interval", type=float, default=0.5, help="memory sampling seconds")
    parser.add_argument("--skip-plain", action="store_true", help="only the `recsys run` side")
    parser.add_argument("--json", type=Path, help="also write all figures (and samples) here")
    parser.add_argument(
        "--timeline-mb", type=float, default=250, help="timeline: show PSS moves of this size"
    )
    parser.add_argument("--keep", type=Path, help="use this RECSYS_HOME and keep it")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("run_args", nargs="*", help="after --: extra `recsys run` arguments")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(plain_fit(args.home)))
        return 0
    if not (args.db or args.shape):
        parser.error("give --db or --shape")

    with tempfile.TemporaryDirectory(prefix="recsys-budget-") as tmp:
        home = args.keep or Path(tmp)
        home.mkdir(parents=True, exist_ok=True)
        _prepare(home, args.db, args.shape)
        res: dict = {"cpus": os.cpu_count(), "load_before": _load()}
        if not args.skip_plain:
            print("plain SVD.fit ...", file=sys.stderr, flush=True)
            res["plain"] = _child("plain", home)
        print("recsys run ...", file=sys.stderr, flush=True)
        run = run_recsys(home, args.interval, args.run_args)
        res["load_after"] = _load()
        res["run"] = run
        res["step_memory"] = step_memory(run)
        res["timeline"] = timeline(run, home / "recsys-run.log", args.timeline_mb)
        _report(res)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
    return 0


def _report(res: dict) -> None:
    run = res["run"]
    samples = run["samples"]
    peak = max(samples, key=lambda s: s[1])
    print(f"load average before {res['load_before']}, after {res['load_after']}")
    if "plain" in res:
        p = res["plain"]
        print(
            f"plain Surprise: {p['ratings']:,} ratings, read {p['read_seconds']:.1f}s, "
            f"load_from_df+trainset {p['build_seconds']:.1f}s, SVD.fit {p['fit_seconds']:.1f}s, "
            f"peak RSS {p['peak_rss_mb']:,.0f} MB"
        )
    print(
        f"recsys run: wall {run['wall_seconds']:.1f}s, peak PSS of all processes "
        f"{peak[1]:,.0f} MB at +{peak[0] - run['start']:.0f}s, largest RSS "
        f"{max(s[2] for s in samples):,.0f} MB, summed RSS {max(s[4] for s in samples):,.0f} MB"
    )
    if "plain" in res:
        print(f"ratio run / plain SVD.fit: {run['wall_seconds'] / p['fit_seconds']:.2f}x")
    print(f"{'step':<34}{'s':>8}{'PSS@start':>11}{'PSS peak':>10}{'RSS max':>9}{'procs':>6}")
    for r in res["step_memory"]:
        print(
            f"{r['step']:<34}{r['seconds']:>8.1f}{r['pss_start_mb']:>11,.0f}"
            f"{r['pss_peak_mb']:>10,.0f}{r['rss_max_mb']:>9,.0f}{r['processes']:>6}"
        )
    steps = sum(r["seconds"] for r in res["step_memory"])
    print(f"sum of step seconds {steps:.1f}s; outside steps {run['wall_seconds'] - steps:.1f}s")
    print("memory timeline (peak PSS of all processes until the next log line):")
    for r in res["timeline"]:
        print(f"  +{r['t']:6.0f}s {r['pss_peak_mb']:8,.0f} MB {r['procs']:>2}p  {r['log']}")
    print("\n".join(run["summary"]))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
