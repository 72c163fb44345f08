import threading

import pytest

from recsys_assets.ml.workers import thread_map


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
