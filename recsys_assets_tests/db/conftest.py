"""Database fixtures: a SQLite file per test, the Django app's tables, a PostgreSQL schema."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recsys_assets import db


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    # A not-yet-existing subdirectory: make_engine(create=True) must create it.
    eng = db.make_engine(f"sqlite:///{tmp_path / 'nested' / 'ratings.db'}", create=True)
    db.ensure_schema(eng, "native")
    return eng


@pytest.fixture
def django_engine(tmp_path: Path) -> Engine:
    eng = db.make_engine(f"sqlite:///{tmp_path / 'django.db'}", create=True)
    db.create_django_tables(eng)
    return eng


@pytest.fixture
def pg_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A throwaway schema in the database named by RECSYS_TEST_POSTGRES_URL, else in the
    throwaway server of the `postgres` fixture (skipped without PostgreSQL, failed under CI)."""
    base = os.environ.get("RECSYS_TEST_POSTGRES_URL")
    if not base:
        base = request.getfixturevalue("postgres").url("postgres")
    schema = f"recsys_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    eng = db.make_engine(url.render_as_string(hide_password=False))
    try:
        yield eng
    finally:
        eng.dispose()
        with admin.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(request: pytest.FixtureRequest, engine: Engine) -> Engine:
    if request.param == "sqlite":
        return engine
    pg = request.getfixturevalue("pg_engine")
    db.ensure_schema(pg, "native")
    return pg
