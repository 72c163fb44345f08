"""Shared fixtures: an isolated RECSYS_HOME with a small generated ratings database."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys_assets.assets.config import training_run_config
from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.resources.io_manager import PickleIOManager
from recsys_assets.resources.model_store import ModelStore
from recsys_assets.resources.ratings_db import RatingsDatabase

# Small and fast, but the same code paths as the defaults.
FAST_CONFIG = training_run_config(n_epochs=5, n_folds=4, top_n=10, n_factors=10)


@pytest.fixture
def recsys_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "recsys"
    monkeypatch.setenv("RECSYS_HOME", str(home))
    for var in ("RECSYS_DATABASE_URL", "RECSYS_SCHEMA", "RECSYS_IO_BASE", "DAGSTER_HOME"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def ratings_db(recsys_home: Path) -> RatingsDatabase:
    db = RatingsDatabase(url=f"sqlite:///{recsys_home / 'ratings.db'}")
    db.ensure_schema()
    return db


@pytest.fixture
def demo_db(ratings_db: RatingsDatabase) -> RatingsDatabase:
    movies, ratings = generate_demo_ratings(n_users=120, n_movies=150, n_ratings=5000, seed=1)
    ratings_db.insert_movies(movies)
    ratings_db.insert_ratings(ratings)
    return ratings_db


def make_resources(home: Path, db: RatingsDatabase) -> dict[str, object]:
    return {
        "ratings_db": db,
        "model_store": ModelStore(root=str(home / "models" / "surprise")),
        "io_manager": PickleIOManager(base_dir=str(home / "storage")),
    }


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{args[-1]} failed ({done.returncode}): {done.stderr or done.stdout}")


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """RECSYS_TEST_POSTGRES_URL, else a throwaway PostgreSQL server on loopback.

    Started from the installed server binaries (initdb + pg_ctl) in a temp directory on a free
    port, as the `postgres` user when running as root; stopped at the end of the session.
    """
    if os.environ.get("RECSYS_TEST_POSTGRES_URL"):
        yield os.environ["RECSYS_TEST_POSTGRES_URL"]
        return
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    root = tmp_path_factory.mktemp("pg")
    data = root / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        root.chmod(0o755)
        for parent in root.parents:  # the server must be able to reach its directory
            if parent.stat().st_mode & 0o005 != 0o005:
                parent.chmod(parent.stat().st_mode | 0o005)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _run(
        [
            *run_as,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "recsys",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    _run(
        [
            *run_as,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-l",
            str(root / "server.log"),
            "start",
        ]
    )
    try:
        yield f"postgresql+psycopg2://recsys@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
