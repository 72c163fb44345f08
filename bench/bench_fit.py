"""SVD fit benchmark: Surprise's `SVD.fit` vs the compiled fit, same trainset, same process.

    nice python bench/bench_fit.py --ml100k ../shared/datasets/ml-100k/u.data --sizes 100k,1m
    nice python bench/bench_fit.py --sizes 5m,25m

Per size: a Surprise `Trainset` (`Dataset.load_from_df(...).build_full_trainset()`: what
`SVD.fit` is normally given) of MovieLens 100K (`--ml100k`) or of `recsys demo-data --shape`'s
generated ratings (1m, 5m, 25m), then `SVD(n_epochs=20, lr_all=0.005, reg_all=0.02,
random_state=42).fit(trainset)` (the seed's model) and `ml.svd_sgd.fit_compiled` of the same
`SVD` on the same trainset, one after the other in this process. Reported: seconds and µs per
rating per epoch of each, their ratio, and whether `pu`, `qi`, `bu`, `bi` are identical
(`np.array_equal`), checked in the same run.

Before the sizes: the compiled function's first call in a fresh process with an empty numba
cache (import + compile + store) and in another fresh process with that cache (import + load),
the costs a machine pays once and every later process pays.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

FACTORS = ("pu", "qi", "bu", "bi")

_FIRST_CALL = """
import json, time
t0 = time.perf_counter()
import numba  # noqa: F401
t1 = time.perf_counter()
from recsys_assets.ml.svd_sgd import sgd_kernel
t2 = time.perf_counter()
sgd_kernel()
t3 = time.perf_counter()
print(json.dumps({"numba_import": t1 - t0, "kernel": t3 - t2}))
"""


def first_call_costs() -> dict[str, dict[str, float]]:
    """Seconds of the first `sgd_kernel()` in fresh processes: empty cache, then cached."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-fit-numba-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("compile (empty cache)", "load (cached)"):
            run = subprocess.run(
                [sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True
            )
            if run.returncode != 0:
                raise SystemExit(run.stderr)
            out[label] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


def ratings_of(size: str, ml100k: str | None):
    """The ratings frame of `size`: MovieLens 100K from its file, else generated."""
    if size == "100k" and ml100k:
        from recsys_assets.data.movielens import read_movielens

        return "ml-100k", read_movielens(ml100k)[1]
    from recsys_assets.cli import DEMO_SHAPES
    from recsys_assets.data.demo import generate_demo_ratings

    users, movies, n = DEMO_SHAPES[size]
    return f"generated {size}", generate_demo_ratings(users, movies, n, seed=0)[1]


def bench_size(size: str, ml100k: str | None, n_epochs: int) -> dict:
    from surprise import SVD, Dataset, Reader

    from recsys_assets.ml.svd_sgd import fit_compiled, sgd_kernel

    label, frame = ratings_of(size, ml100k)
    t0 = time.perf_counter()
    scale = (float(frame["rating"].min()), float(frame["rating"].max()))
    data = Dataset.load_from_df(
        frame[["user_id", "movie_id", "rating"]], Reader(rating_scale=scale)
    )
    del frame
    trainset = data.build_full_trainset()
    del data
    build = time.perf_counter() - t0
    sgd_kernel()  # loaded before timing: its first-call cost is measured separately

    def svd() -> SVD:
        return SVD(n_epochs=n_epochs, lr_all=0.005, reg_all=0.02, random_state=42)

    t0 = time.perf_counter()
    reference = svd().fit(trainset)
    surprise_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = fit_compiled(svd(), trainset)
    compiled_s = time.perf_counter() - t0
    identical = all(np.array_equal(getattr(reference, n), getattr(compiled, n)) for n in FACTORS)
    per = trainset.n_ratings * max(n_epochs, 1) / 1e6
    return {
        "size": size,
        "data": label,
        "ratings": trainset.n_ratings,
        "users": trainset.n_users,
        "movies": trainset.n_items,
        "trainset_seconds": build,
        "surprise_seconds": surprise_s,
        "compiled_seconds": compiled_s,
        "surprise_us_per_rating_epoch": surprise_s / per,
        "compiled_us_per_rating_epoch": compiled_s / per,
        "ratio": surprise_s / compiled_s,
        "identical": identical,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100k,1m", help="comma-separated: 100k,1m,5m,25m")
    parser.add_argument("--ml100k", help="MovieLens 100K u.data (else 100k is generated)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    from recsys_assets.cli import DEMO_SHAPES

    unknown = [s for s in sizes if s not in DEMO_SHAPES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {', '.join(DEMO_SHAPES)}")

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    costs = first_call_costs()
    print("\ncompiled fit, first call in a fresh process")
    for label, c in costs.items():
        print(f"  {label:<22} numba import {c['numba_import']:.2f} s, kernel {c['kernel']:.2f} s")

    rows = []
    header = (
        f"{'size':<6}{'ratings':>11}{'SVD.fit s':>11}{'compiled s':>12}"
        f"{'SVD.fit µs':>12}{'compiled µs':>13}{'ratio':>8}  identical"
    )
    print(
        f"\nSVD(n_epochs={args.epochs}, lr_all=0.005, reg_all=0.02, random_state=42), "
        "µs per rating per epoch"
    )
    print(header, flush=True)
    for size in sizes:
        row = bench_size(size, args.ml100k, args.epochs)
        rows.append(row)
        print(
            f"{size:<6}{row['ratings']:>11,}{row['surprise_seconds']:>11.2f}"
            f"{row['compiled_seconds']:>12.2f}{row['surprise_us_per_rating_epoch']:>12.3f}"
            f"{row['compiled_us_per_rating_epoch']:>13.3f}{row['ratio']:>7.1f}x  "
            f"{'yes' if row['identical'] else 'NO'}",
            flush=True,
        )
    print("\ndata: " + "; ".join(f"{r['size']} = {r['data']}" for r in rows))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"first_call": costs, "sizes": rows}, f, indent=2)
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
