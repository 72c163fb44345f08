"""Forked worker pools for the CPU-bound tasks of one step (CV folds, search candidates,
EASE's λ path), and a thread map for numpy/scipy blocks that release the GIL.

Workers are forked, not spawned: they inherit the step's data (module globals set just
before the pool starts) without pickling it, and the compiled kernels already loaded.
Each worker uses one BLAS thread: the pool already keeps every core busy, and OpenBLAS
threads spinning against each other (two workers x two threads on two cores) made EASE's
dense solves several times slower than one thread each.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import TypeVar

from threadpoolctl import threadpool_limits

__all__ = ["cpu_count", "fork_pool", "runs_inline", "thread_map"]

T = TypeVar("T")
R = TypeVar("R")


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


def thread_map(fn: Callable[[T], R], items: Iterable[T], n_threads: int | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on up to `n_threads` threads (default: the CPUs), in order.

    For blocks whose time goes to numpy/scipy calls that release the GIL (scipy's sparse x
    dense product, argpartition, fancy indexing): EASE's scores run single-threaded in scipy,
    so blocks side by side use the other cores. `fn` must not share mutable state.
    """
    items = items if isinstance(items, Sequence) else list(items)
    n_threads = min(n_threads or cpu_count(), len(items))
    if n_threads <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        return list(pool.map(fn, items))
