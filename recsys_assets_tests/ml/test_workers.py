import multiprocessing
import os
import threading

import pytest

from recsys_assets.ml.workers import fork_map, thread_map


@pytest.mark.parametrize("n_threads", [None, 1, 2, 8])
def test_thread_map_keeps_the_order_of_its_items(n_threads):
    assert thread_map(lambda x: x * x, range(50), n_threads) == [x * x for x in range(50)]
    assert thread_map(lambda x: x, [], n_threads) == []


def test_thread_map_runs_items_side_by_side():
    # Two items that each wait for the other: done only if both run at the same time.
    barrier = threading.Barrier(2, timeout=10)
    assert thread_map(lambda x: barrier.wait() * 0 + x, [1, 2], n_threads=2) == [1, 2]


def test_thread_map_raises_what_an_item_raised():
    def fail_on_three(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    with pytest.raises(ValueError, match="three"):
        thread_map(fail_on_three, range(6), n_threads=2)


class _Unpicklable:
    """Shared data a worker may read but that must never be pickled to reach it."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.parent = os.getpid()

    def __reduce__(self):
        raise TypeError("shared data was pickled")


def _add_base(shared: _Unpicklable, x: int) -> tuple[int, bool]:
    return shared.base + x, os.getpid() != shared.parent


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_fork_map_hands_shared_data_to_forked_workers_without_pickling_it(n_jobs):
    out = fork_map(_add_base, _Unpicklable(100), list(range(7)), n_jobs)
    assert [v for v, _ in out] == [100 + x for x in range(7)]
    # Two jobs fork (where the platform can); one job runs here.
    forked = n_jobs > 1 and "fork" in multiprocessing.get_all_start_methods()
    assert all(in_child == forked for _, in_child in out)
    assert fork_map(_add_base, _Unpicklable(0), [], n_jobs) == []


def _fail_on_three(shared: object, x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def test_fork_map_raises_what_a_task_raised():
    with pytest.raises(ValueError, match="three"):
        fork_map(_fail_on_three, None, range(6), 2)


def _wait_for_marker(marker: str, x: int) -> bool:
    """Item 0 returns at once; item 1 waits for the parent's callback of item 0 (up to 60 s)."""
    if x == 0:
        return True
    for _ in range(600):
        if os.path.exists(marker):
            return True
        threading.Event().wait(0.1)
    return False


def test_fork_map_reports_each_result_as_it_arrives(tmp_path):
    # The callback of item 0 unblocks item 1: had results been reported only once all were
    # in, item 1 would have given up waiting.
    marker = str(tmp_path / "item-0-reported")
    seen = []

    def on_result(x: int, result: bool) -> None:
        seen.append(x)
        if x == 0:
            open(marker, "w").close()

    assert fork_map(_wait_for_marker, marker, [0, 1], 2, on_result=on_result) == [True, True]
    assert sorted(seen) == [0, 1]


def test_fork_map_inline_reports_each_result_before_the_next_item_runs():
    events = []

    def task(shared: object, x: int) -> int:
        events.append(("run", x))
        return x

    fork_map(task, None, [1, 2, 3], 1, on_result=lambda x, r: events.append(("result", x)))
    assert events == [
        ("run", 1),
        ("result", 1),
        ("run", 2),
        ("result", 2),
        ("run", 3),
        ("result", 3),
    ]
