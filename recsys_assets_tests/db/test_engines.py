"""Engines: one cached pool per URL, SQLite pragmas, missing files, masked URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys_assets import db


def test_make_engine_caches_creates_dir_and_sets_pragmas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a' / 'b' / 'r.db'}"
    eng = db.make_engine(url, create=True)
    assert db.make_engine(url) is eng
    assert (tmp_path / "a" / "b").is_dir()
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_postgres_url_builds_engine_and_masks_password() -> None:
    url = "postgresql+psycopg2://recsys:s3cret@127.0.0.1:1/recsys"
    eng = db.make_engine(url)  # no connection is attempted until first use
    assert eng.dialect.name == "postgresql"
    assert eng.dialect.driver == "psycopg2"
    assert eng.pool._pre_ping is True
    masked = db.safe_url(eng)
    assert "s3cret" not in masked and "***" in masked
    assert db.safe_url(url) == masked


def test_missing_sqlite_file_is_an_error_and_nothing_is_created(tmp_path: Path) -> None:
    path = tmp_path / "typo" / "ratings.db"
    with pytest.raises(db.MissingDatabaseError, match=str(path)):
        db.make_engine(f"sqlite:///{path}")
    assert not path.parent.exists()


@pytest.mark.parametrize("key", ["password", "PASSWORD", "sslpassword"])
def test_safe_url_masks_a_password_given_as_a_query_parameter(key: str) -> None:
    url = f"postgresql+psycopg2://recsys@db.example/app?{key}=s3cret&sslmode=require"
    masked = db.safe_url(url)
    assert "s3cret" not in masked and "***" in masked and "sslmode=require" in masked
    assert "s3cret" not in db.safe_url("not a url s3cret")
