"""`np.unique` (NumPy 2.4 hashes) vs `ml.arrays.unique` (sorts) on user-id-shaped arrays.

    python bench/bench_unique.py            # 5M and 25M ids, same process, same arrays

The project's helper exists because of this comparison; it prints seconds and the ratio.
"""

from __future__ import annotations

import time

import numpy as np

from recsys_assets.ml.arrays import unique


def main() -> None:
    print(f"numpy {np.__version__}")
    rng = np.random.default_rng(0)
    for size, distinct in ((5_000_000, 32_500), (25_000_000, 162_541)):
        ids = rng.integers(1, distinct + 1, size)
        t0 = time.perf_counter()
        expected = np.unique(ids)
        t_numpy = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = unique(ids)
        t_sorted = time.perf_counter() - t0
        assert np.array_equal(expected, got)
        print(
            f"{size:>11,} ids ({distinct:,} distinct): np.unique {t_numpy:.2f}s, "
            f"arrays.unique {t_sorted:.2f}s, {t_numpy / t_sorted:.1f}x; same values"
        )


if __name__ == "__main__":
    main()
