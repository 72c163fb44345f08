"""Fixtures of the graph tests: an ephemeral instance, a run of every asset and check, the store."""

from __future__ import annotations

import dagster as dg
import pytest

from recsys_assets.definitions import all_assets, all_checks
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets_tests.conftest import make_resources


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def run(recsys_home, demo_db, instance):
    def _run(run_config, selection=None):
        return dg.materialize(
            [*all_assets, *all_checks],
            resources=make_resources(recsys_home, demo_db),
            run_config=run_config,
            instance=instance,
            selection=selection,
            raise_on_error=False,
        )

    return _run


@pytest.fixture
def store(recsys_home):
    return ArtifactStore(str(recsys_home / "models" / "surprise"))
