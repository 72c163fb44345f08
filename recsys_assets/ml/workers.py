"""Forked worker pools for the CPU-bound tasks of one step (CV folds, search candidates,
EASE's λ path), and a thread map for numpy/scipy blocks that release the GIL.

Workers are forked, not spawned: they inherit the step's data (`shared`, handed to the pool
before it forks) without pickling it, and the compiled kernels already loaded. Each worker
uses one BLAS thread: the pool already keeps every core busy, and OpenBLAS threads spinning
against each other (two workers x two threads on two cores) made EASE's dense solves several
times slower than one thread each.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from threadpoolctl import threadpool_limits

__all__ = ["Workers", "cpu_count", "fork_map", "fork_workers", "runs_inline", "thread_map"]

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

# In a forked worker: the pool's `shared` value, set by the pool's initializer. Tasks read it
# here instead of receiving it pickled; the parent never sets it.
_in_worker: dict[str, Any] = {}


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


def _start_worker(shared: object) -> None:
    # Runs in the forked child: `shared` came with the fork (a Process's arguments are not
    # pickled under the fork start method).
    _in_worker["shared"] = shared
    threadpool_limits(limits=1, user_api="blas")


def _call_shared(fn: Callable[..., R], args: tuple) -> R:
    return fn(_in_worker["shared"], *args)


class Workers(Generic[S]):
    """``submit(fn, *args)`` runs ``fn(shared, *args)`` in a forked worker (or at once, here,
    when the pool runs inline) and returns its future."""

    def __init__(self, shared: S, pool: ProcessPoolExecutor | None) -> None:
        self._shared = shared
        self._pool = pool

    def submit(self, fn: Callable[..., R], *args: object) -> Future:
        if self._pool is not None:
            return self._pool.submit(_call_shared, fn, args)
        future: Future = Future()
        future.set_result(fn(self._shared, *args))
        return future


@contextmanager
def fork_workers(shared: S, n_jobs: int, n_tasks: int) -> Iterator[Workers[S]]:
    """Workers that all see `shared`: `n_jobs` forked processes, one BLAS thread each, or this
    process when `runs_inline(n_jobs, n_tasks)`."""
    if runs_inline(n_jobs, n_tasks):
        yield Workers(shared, None)
        return
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        max_workers=n_jobs, mp_context=ctx, initializer=_start_worker, initargs=(shared,)
    ) as pool:
        yield Workers(shared, pool)


def fork_map(
    fn: Callable[[S, T], R],
    shared: S,
    items: Sequence[T],
    n_jobs: int | None = None,
    on_result: Callable[[T, R], None] | None = None,
) -> list[R]:
    """``[fn(shared, x) for x in items]`` in up to `n_jobs` forked workers (None: the CPUs),
    in order; `shared` reaches the workers through the fork, not pickled.

    `on_result(x, result)` runs here, in the parent, as each result arrives (in completion
    order; run inline, right after each item): progress of long steps, as they go.
    """
    n_jobs = min(n_jobs or cpu_count(), max(len(items), 1))
    report = on_result or (lambda x, result: None)
    if runs_inline(n_jobs, len(items)):
        results = []
        for x in items:
            results.append(fn(shared, x))
            report(x, results[-1])
        return results
    with fork_workers(shared, n_jobs, len(items)) as workers:
        futures = {workers.submit(fn, x): k for k, x in enumerate(items)}
        out: dict[int, R] = {}
        for future in as_completed(futures):
            k = futures[future]
            out[k] = future.result()
            report(items[k], out[k])
    return [out[k] for k in range(len(items))]


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
