"""Shared fixtures: an isolated RECSYS_HOME with a small generated ratings database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_assets.assets.config import training_run_config
from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.db import RatingsStore
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets.resources.executor_layout import ExecutorLayout
from recsys_assets.resources.io_manager import PickleIOManager
from recsys_assets_tests.servers import Postgres, postgres_server

# Small and fast, but the same code paths as the defaults; on the demo fixture's data it beats
# BaselineOnly, so the promotion gates pass. Fixed hyperparameters (no search): the tests of
# the search (assets/test_tuning.py) run it with small budgets of their own.
FAST_SVD = {"n_epochs": 30, "n_factors": 5, "lr_all": 0.02, "reg_all": 0.1}
FAST_CONFIG = training_run_config(n_folds=4, top_n=10, tuning="fixed", **FAST_SVD)

# Every test gets its own RECSYS_HOME, and with it its own numba cache: one cache for the
# session (and later sessions) instead, so step processes and subprocesses load the compiled
# SVD fit rather than compile it again. Inherited by every process the tests start.
os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "numba")
)


@pytest.fixture
def recsys_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "recsys"
    monkeypatch.setenv("RECSYS_HOME", str(home))
    for var in (
        "RECSYS_DATABASE_URL",
        "RECSYS_SCHEMA",
        "RECSYS_IO_BASE",
        "RECSYS_MODEL_STORE",
        "RECSYS_RATING_SCALE",
        "RECSYS_MAX_INVALID_FRACTION",
        "DAGSTER_HOME",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def ratings_db(recsys_home: Path) -> RatingsStore:
    db = RatingsStore(f"sqlite:///{recsys_home / 'ratings.db'}")
    db.ensure_schema()
    return db


@pytest.fixture
def demo_db(ratings_db: RatingsStore) -> RatingsStore:
    movies, ratings = generate_demo_ratings(n_users=120, n_movies=150, n_ratings=5000, seed=1)
    ratings_db.insert_movies(movies)
    ratings_db.insert_ratings(ratings)
    return ratings_db


def make_resources(home: Path, db: RatingsStore) -> dict[str, object]:
    # Plain stores: Dagster hands a non-resource object to assets as it is (the resources
    # that provide them in deployments are tested in resources/).
    return {
        "ratings_db": db,
        "model_store": ArtifactStore(home / "models" / "surprise"),
        "io_manager": PickleIOManager(base_dir=str(home / "storage")),
        # dg.materialize and execute_in_process run every step in this process.
        "executor_layout": ExecutorLayout(executor="in_process"),
    }


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL server on a free loopback port (databases `dagster`, `ratings`),
    started on first use and stopped at the end of the session. Skipped when the server
    binaries are missing — a failure when CI is set."""
    with postgres_server() as server:
        yield server


def clustered_ratings(n_users=120, n_movies=150, n_groups=5, seed=0):
    """Users who mostly watch one of five groups of movies (and like them): co-watching
    predicts the held-out movies, which EASE captures better than popularity or the blend."""
    rng = np.random.default_rng(seed)
    group = np.arange(n_movies) % n_groups
    rows = []
    for user in range(1, n_users + 1):
        g, bias = rng.integers(n_groups), rng.normal(0, 0.4)
        own = rng.choice(np.flatnonzero(group == g), 22, replace=False)
        other = rng.choice(np.flatnonzero(group != g), 8, replace=False)
        for m in np.concatenate([own, other]).tolist():
            value = 3.0 + bias + (1.0 if group[m] == g else -0.5) + rng.normal(0, 0.5)
            rows.append((user, m + 1, float(np.clip(np.rint(value), 1, 5)), 1_600_000_000 + m))
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    ids = np.arange(1, n_movies + 1)
    movies = pd.DataFrame({"id": ids, "title": [f"Movie {i}" for i in ids.tolist()]})
    return movies, ratings


@pytest.fixture
def clustered_db(ratings_db: RatingsStore) -> RatingsStore:
    """`ratings_db` holding `clustered_ratings()`: data on which EASE ships."""
    movies, ratings = clustered_ratings()
    ratings_db.insert_movies(movies)
    ratings_db.insert_ratings(ratings)
    return ratings_db
