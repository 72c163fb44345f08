import errno

import dagster as dg
import pandas as pd
import pytest

from recsys_assets.resources.io_manager import PickleIOManager


@dg.asset
def numbers() -> pd.DataFrame:
    return pd.DataFrame({"x": [1, 2, 3]})


@dg.asset
def total(numbers: pd.DataFrame) -> int:
    return int(numbers["x"].sum())


@pytest.mark.parametrize("scheme", ["local", "memory"])
def test_values_round_trip_through_the_pickle_io_manager(tmp_path, scheme):
    base = str(tmp_path / "store") if scheme == "local" else f"memory://{tmp_path.name}/store"
    io_manager = PickleIOManager(base_dir=base)
    result = dg.materialize([numbers, total], resources={"io_manager": io_manager})
    assert result.success and result.output_for_node("total") == 6
    if scheme == "local":
        assert (tmp_path / "store" / "numbers.pkl").is_file()
        assert not list((tmp_path / "store").glob(".*.tmp"))  # temp file renamed into place
    # A second run loads the stored upstream value instead of recomputing it.
    again = dg.materialize(
        [numbers, total], resources={"io_manager": io_manager}, selection=[total]
    )
    assert again.output_for_node("total") == 6


class FillsTheDisk:
    """Pickling it writes some bytes, then fails as a full disk does."""

    def __reduce__(self):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_leaves_no_temp_file_and_names_the_value(tmp_path):
    @dg.asset(name="big")
    def big() -> object:
        return FillsTheDisk()

    store = tmp_path / "store"
    result = dg.materialize(
        [big], resources={"io_manager": PickleIOManager(base_dir=str(store))}, raise_on_error=False
    )
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    while error.cause is not None and "No space" not in error.message:
        error = error.cause
    assert "No space left on device" in error.message and str(store / "big.pkl") in error.message
    assert not list(store.glob(".*.tmp")) and not (store / "big.pkl").exists()
