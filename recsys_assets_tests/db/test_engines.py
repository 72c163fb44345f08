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


def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "ratings.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(db.DatabaseUnusableError) as err:
        db.count_ratings(db.make_engine(f"sqlite:///{junk}"), "native")
    message = str(err.value)
    assert str(junk) in message and "is not a SQLite database" in message
    assert "RECSYS_DATABASE_URL" in message


def test_a_database_file_that_cannot_be_opened_is_named(tmp_path: Path) -> None:
    # A directory where the file should be: SQLite's "unable to open database file", as for
    # a file in a directory this user cannot write (the tests run as root, which can).
    where = tmp_path / "ratings.db"
    where.mkdir()
    with pytest.raises(db.DatabaseUnusableError) as err:
        db.count_ratings(db.make_engine(f"sqlite:///{where}"), "native")
    message = str(err.value)
    assert str(where) in message and "unable to open database file" in message
    assert "writable" in message


@pytest.mark.parametrize(
    ("url", "module"),
    [
        ("mysql://app:s3cret@db.example/app", "MySQLdb"),
        ("postgresql+psycopg://app:s3cret@db.example/app", "psycopg"),
    ],
)
def test_a_missing_driver_names_the_url_and_an_installed_driver(url: str, module: str) -> None:
    with pytest.raises(db.DatabaseUnusableError) as err:
        db.make_engine(url)
    message = str(err.value)
    assert f"No module named '{module}'" in message
    assert db.safe_url(url) in message and "s3cret" not in message
    assert "postgresql+psycopg2://" in message
