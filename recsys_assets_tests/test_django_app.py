"""The Django app as a client, against a real Django project on a throwaway PostgreSQL.

`recsys_assets_tests/django_app` has the seed app's models (`movies.Movie`, `ratings.Rating`
with a GenericForeignKey and the post_save that deactivates the older rating, a second rated
content type `shows.TVShow`) and the unmanaged `UserPrediction` model the README documents.
Django runs in subprocesses (`manage.py migrate / load_ratings / rate / predictions`), as the
app would; the project runs in this process with RECSYS_SCHEMA=django on the same database.
Every app table must be byte-for-byte unchanged by the project.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from recsys_assets import db
from recsys_assets.cli import main
from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.db import RatingsStore
from recsys_assets.sensors.ratings_events import USER_IDS
from recsys_assets_tests.conftest import FAST_CONFIG

pytestmark = pytest.mark.integration

DJANGO_DIR = Path(__file__).parent / "django_app"
REPO = Path(__file__).resolve().parent.parent
# A second Django (4.2 LTS) beside the venv's 5.2, importable only by the subprocess that
# checks the documented model on it; `make test` installs it (Makefile).
DJANGO_42 = Path(os.environ.get("RECSYS_TEST_DJANGO42") or REPO / ".venv" / "django-4.2")


class App:
    """One Django project database: manage.py commands and SQLAlchemy access to it."""

    def __init__(self, sa_url: str, pythonpath: Path | None = None) -> None:
        self.sa_url = sa_url
        self.engine = sa.create_engine(sa_url)
        url = sa.make_url(sa_url)
        self.env = {
            **os.environ,
            "APP_DATABASE_URL": url.set(drivername="postgresql").render_as_string(
                hide_password=False
            ),
        }
        if pythonpath is not None:
            self.env["PYTHONPATH"] = str(pythonpath)

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=DJANGO_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def predictions(self, users: list[int]) -> dict:
        return json.loads(self.manage("predictions", *map(str, users)))

    def checksums(self) -> dict[str, str]:
        """md5 over the sorted text of every row of every table but user_predictions."""
        tables = sorted(sa.inspect(self.engine).get_table_names())
        prep = self.engine.dialect.identifier_preparer
        sums = {}
        with self.engine.connect() as conn:
            for name in tables:
                if name == db.PREDICTIONS_TABLE:
                    continue
                # Table names read from the database itself, quoted by the dialect.
                sql = (
                    "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                    f"FROM {prep.quote(name)} t"
                )
                sums[name] = conn.exec_driver_sql(sql).scalar_one()
        return sums


@pytest.fixture
def app_url(postgres) -> Iterator[str]:
    """A fresh, empty database for one Django project on the session's PostgreSQL."""
    name = f"app_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')  # generated name, not input
    try:
        yield postgres.url(name)
    finally:
        db.dispose_engines()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def app_env(app_url: str, recsys_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RECSYS_DATABASE_URL", app_url)
    monkeypatch.setenv("RECSYS_SCHEMA", "django")
    monkeypatch.setenv("RECSYS_EXECUTOR", "in_process")
    monkeypatch.setenv("DAGSTER_HOME", str(recsys_home / "dagster_home"))
    (recsys_home / "dagster_home").mkdir(parents=True)
    return app_url


def _write_ratings_csv(path: Path, seed: int = 1) -> dict:
    """Generated movie ratings (some without a value) and TV-show ratings with the same ids."""
    _, ratings = generate_demo_ratings(n_users=120, n_movies=150, n_ratings=5000, seed=seed)
    rng = np.random.default_rng(seed)
    null_rows = set(rng.choice(len(ratings), size=40, replace=False).tolist())
    shows = {(int(u), int(rng.integers(1, 60))) for u in rng.integers(1, 121, size=400)}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "kind", "object_id", "value"])
        for i, row in enumerate(ratings.itertuples(index=False)):
            value = "" if i in null_rows else f"{row.rating:g}"
            writer.writerow([row.user_id, "movie", row.movie_id, value])
        for user, show in sorted(shows):
            writer.writerow([user, "show", show, "4"])
    nulls = {
        (int(ratings.user_id.iloc[i]), int(ratings.movie_id.iloc[i])) for i in sorted(null_rows)
    }
    return {"movie_rows": len(ratings), "nulls": nulls, "shows": sorted(shows)}


def _tick_ratings_sensor(defs, instance, cursor):
    """One tick of ratings_db_sensor; its events stored as the daemon stores them."""
    sensor = defs.resolve_sensor_def("ratings_db_sensor")
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"ratings_db": RatingsStore.from_env()}
    )
    result = sensor(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def test_the_django_app_reads_its_suggestions_and_its_tables_stay_untouched(
    app_env: str, tmp_path: Path, capsys
) -> None:
    from recsys_assets import definitions
    from recsys_assets.cli.run import execute_training

    app = App(app_env)
    app.manage("migrate", "--no-input")
    migrated = set(sa.inspect(app.engine).get_table_names())
    assert {"movies_movie", "ratings_rating", "shows_tvshow", "django_content_type"} <= migrated
    assert db.PREDICTIONS_TABLE not in migrated  # unmanaged: the project creates it
    empty = app.checksums()

    # The README's default command on the app's (still empty) database: a clear error, and
    # no demo movies or ratings written into the app's tables.
    capsys.readouterr()
    assert main(["run", "--n-epochs", "2", "--folds", "2"]) == 2
    err = capsys.readouterr().err
    assert "no active ratings of content type 'movies.movie' in ratings_rating" in err
    assert main(["demo-data", "--users", "5", "--movies", "5", "--ratings", "20"]) == 2
    assert "never writes them" in capsys.readouterr().err
    assert app.checksums() == empty
    # A refused run creates nothing either: user_predictions comes with the first real write.
    assert set(sa.inspect(app.engine).get_table_names()) == migrated

    # The app's data, through its ORM: bulk ratings, then re-ratings saved one by one (the
    # post_save deactivates the older rating), including one of a TV show.
    data = _write_ratings_csv(tmp_path / "ratings.csv")
    app.manage(
        "load_ratings", str(tmp_path / "ratings.csv"), "--users=120", "--movies=150", "--shows=60"
    )
    with app.engine.connect() as conn:
        # One movie each of users 1 and 2 already rated with a value: re-rated below.
        rerated = sorted(
            dict(
                conn.exec_driver_sql(
                    "SELECT r.user_id, r.object_id FROM ratings_rating r JOIN "
                    "django_content_type c ON c.id = r.content_type_id WHERE c.model = 'movie' "
                    "AND r.value IS NOT NULL AND r.user_id IN (1, 2) ORDER BY r.id"
                ).all()
            ).items()
        )
    assert len(rerated) == 2
    show_user, show = data["shows"][0]
    app.manage(
        "rate",
        *(f"{u}:movie:{m}:5" for u, m in rerated),
        f"{show_user}:show:{show}:1",
    )
    database = RatingsStore.from_env()
    database.ensure_schema()
    mark = database.watermark()
    assert mark.inactive == len(rerated)  # the TV-show re-rating does not count
    assert database.count_ratings() == data["movie_rows"]  # active movie rows only
    loaded = app.checksums()

    # The project, as the daily schedule runs it, on the app's database.
    with dg.instance_for_test() as instance:
        result = execute_training(instance, FAST_CONFIG, "in_process")
        assert result.success
        ratings_meta = result.asset_materializations_for_node("ratings_df")[-1].metadata
        assert ratings_meta["rows_read"].value == data["movie_rows"]
        assert ratings_meta["dropped_null_rating"].value == len(data["nulls"])
        assert ratings_meta["rows_kept"].value == data["movie_rows"] - len(data["nulls"])
        assert app.checksums() == loaded

        # The app reads the suggestions through its unmanaged model.
        table = database.read_predictions()
        users = sorted({u for u, _ in data["nulls"]} | {1, 2})
        seen = app.predictions(users)
        assert seen["django"].startswith("5.2") and seen["count"] == len(table)
        mine = table[table["user_id"].isin(users)]
        assert [(r["user_id"], r["movie_id"], r["rank"]) for r in seen["rows"]] == list(
            mine[["user_id", "movie_id", "rank"]].itertuples(index=False, name=None)
        )
        assert all(r["title"] == f"Movie {r['movie_id']}" for r in seen["rows"])
        assert {r["created_at"] for r in seen["rows"]} == {
            django_isoformat(int(table["created_at"].iloc[0]))
        }
        # Movies rated without a value are not suggested to the user who rated them.
        suggested = {(r["user_id"], r["movie_id"]) for r in seen["rows"]}
        assert not suggested & data["nulls"]

        # New ratings through the ORM reach the sensors, and those users get refreshed.
        defs = definitions.build_defs()
        cursor = _tick_ratings_sensor(defs, instance, None).cursor
        top = {u: [r["movie_id"] for r in seen["rows"] if r["user_id"] == u] for u in (1, 2)}
        app.manage(
            "rate",
            f"1:movie:{top[1][0]}:4",  # a movie suggested to user 1, now rated
            f"2:movie:{top[2][0]}:null",  # seen by user 2, no value given
            f"{show_user}:show:{show}:3",  # a TV show: not a movie rating
        )
        after_orm = app.checksums()
        polled = _tick_ratings_sensor(defs, instance, cursor)
        (event,) = polled.asset_events
        assert event.metadata[USER_IDS].value == [1, 2]
        assert event.metadata["deactivated"].value == 0  # the TV-show re-rating is not counted
        retrain = defs.resolve_sensor_def("retrain_on_new_ratings")
        context = dg.build_sensor_context(
            instance=instance, definitions=defs, resources=definitions.build_resources()
        )
        (request,) = retrain.evaluate_tick(context).run_requests
        assert request.job_name == "refresh_predictions_job"
        refreshed = defs.resolve_job_def("refresh_predictions_job").execute_in_process(
            run_config=request.run_config, instance=instance
        )
        assert refreshed.success
        now = app.predictions([1, 2])["rows"]
        assert top[1][0] not in [r["movie_id"] for r in now if r["user_id"] == 1]
        assert top[2][0] not in [r["movie_id"] for r in now if r["user_id"] == 2]
        assert [r["rank"] for r in now if r["user_id"] == 1] == list(range(1, 11))
        assert app.checksums() == after_orm


def django_isoformat(seconds: int) -> str:
    """What Django's aware DateTimeField gives for a unix time (UTC, isoformat)."""
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).isoformat()


def test_the_documented_model_works_on_django_42(app_url: str) -> None:
    """The README's unmanaged model (the test project's `recommendations` app) on Django 4.2."""
    if not (DJANGO_42 / "django").is_dir():
        message = f"Django 4.2 not installed under {DJANGO_42}; `make test` installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    app = App(app_url, pythonpath=DJANGO_42)
    app.manage("migrate", "--no-input")
    app.manage("load_ratings", os.devnull, "--users=3", "--movies=4", "--shows=1")
    database = RatingsStore(app_url, preset="django")
    database.ensure_schema()
    frame = {
        "user_id": [1, 1, 2],
        "movie_id": [3, 4, 3],
        "rank": [1, 2, 1],
        "score": [4.5, 4.0, 3.5],
        "source": ["svd", "svd", "popular"],
    }
    database.replace_predictions(pd.DataFrame(frame), "v42", created_at=1_700_000_000)
    seen = app.predictions([1, 2])
    assert seen["django"].startswith("4.2")
    assert [(r["user_id"], r["title"], r["rank"], r["source"]) for r in seen["rows"]] == [
        (1, "Movie 3", 1, "svd"),
        (1, "Movie 4", 2, "svd"),
        (2, "Movie 3", 1, "popular"),
    ]
    assert {r["created_at"] for r in seen["rows"]} == {"2023-11-14T22:13:20+00:00"}
