"""Forked worker pools for the CPU-bound tasks of one step (CV folds, search candidates,
EASE's λ path).

Workers are forked, not spawned: they inherit the step's data (module globals set just
before the pool starts) without pickling it, and the compiled kernels already loaded.
Each worker uses one BLAS thread: the pool already keeps every core busy, and OpenBLAS
threads spinning against each other (two workers x two threads on two cores) made EASE's
dense solves several times slower than one thread each.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from threadpoolctl import threadpool_limits

__all__ = ["cpu_count", "fork_pool", "runs_inline"]


def cpu_count() -> int:
    return os.cpu_count() or 1


def runs_inline(n_jobs: int, n_tasks: int) -> bool:
    """True when tasks should run in this process: one worker or one task, no fork start
    method, or a daemonic process (which may not start children)."""
    return (
        n_jobs <= 1
        or n_tasks <= 1
        or "fork" not in multiprocessing.get_all_start_methods()
        or multiprocessing.current_process().daemon
    )


def _one_blas_thread() -> None:
    threadpool_limits(limits=1, user_api="blas")


def fork_pool(n_jobs: int) -> ProcessPoolExecutor:
    """A pool of `n_jobs` forked workers, one BLAS thread each."""
    ctx = multiprocessing.get_context("fork")
    return ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx, initializer=_one_blas_thread)
