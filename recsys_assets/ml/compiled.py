"""Every numba-compiled function of the project, loaded in one call.

Each is compiled once per machine into the numba cache (`svd_sgd.numba_cache_dir`) and loaded
from it afterwards. `load_compiled()` is what the multiprocess executor's forkserver preloads
(`compiled_preload.py`) and what the benchmarks call before timing, so that no timed step pays
a machine's one-time compile.
"""

from __future__ import annotations

import time

from recsys_assets.ml.ease import gram_kernel, weights_kernel
from recsys_assets.ml.svd_sgd import sgd_kernel

__all__ = ["load_compiled"]


def load_compiled() -> float:
    """Load (or compile and cache) the SVD fit and EASE's kernels; return the seconds taken."""
    start = time.perf_counter()
    sgd_kernel()
    gram_kernel()
    weights_kernel()
    return time.perf_counter() - start
