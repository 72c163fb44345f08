"""Loads the compiled kernels on import: the multiprocess executor's forkserver preloads it.

Step processes forked from the forkserver then inherit the compiled functions instead of each
importing numba and loading them from the on-disk cache (~0.5-1 s per step process here).
"""

from recsys_assets.ml.compiled import load_compiled

load_compiled()
