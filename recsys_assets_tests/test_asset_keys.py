"""Every key in `asset_keys` names an asset of the definitions (a renamed asset fails here)."""

import dagster as dg

from recsys_assets import asset_keys
from recsys_assets.definitions import defs


def test_every_key_is_an_asset_of_the_definitions():
    keys = {v for v in vars(asset_keys).values() if isinstance(v, dg.AssetKey)}
    assert len(keys) >= 8
    assert keys <= set(defs.resolve_all_asset_keys())
