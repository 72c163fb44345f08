"""Loads the compiled SVD fit on import: the multiprocess executor's forkserver preloads it.

Step processes forked from the forkserver then inherit the compiled function instead of each
importing numba and loading it from the on-disk cache (~0.5-1 s per step process here).
"""

from recsys_assets.ml.svd_sgd import sgd_kernel

sgd_kernel()
