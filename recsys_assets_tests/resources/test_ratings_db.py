"""RatingsDatabase resource (configuration that provides a RatingsStore) and the `recsys` CLI
commands that load data through the store."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from pydantic import ValidationError

from recsys_assets import cli
from recsys_assets.db import DjangoSchema, RatingsStore
from recsys_assets.resources.ratings_db import RatingsDatabase


def test_preset_is_validated_with_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="native, django"):
        RatingsDatabase(url=f"sqlite:///{tmp_path / 'r.db'}", preset="oracle")


def test_from_env_defaults_to_sqlite_under_recsys_home(recsys_home: Path) -> None:
    database = RatingsDatabase.from_env()
    assert database.preset == "native"
    assert database.url == f"sqlite:///{recsys_home / 'ratings.db'}"
    store = database.store()
    assert store.preset.name == "native" and store.url == database.url
    store.ensure_schema()
    assert (recsys_home / "ratings.db").is_file()
    assert RatingsStore.from_env().url == database.url  # the CLI's way, without Dagster


def test_from_env_reads_url_and_schema_and_masks_password(
    recsys_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSYS_DATABASE_URL", "postgresql+psycopg2://app:hunter2@db.local/recs")
    monkeypatch.setenv("RECSYS_SCHEMA", "django")
    monkeypatch.setenv("RECSYS_DJANGO_RATINGS_TABLE", "reviews_review")
    database = RatingsDatabase.from_env()
    assert database.preset == "django"
    for store in (database.store(), RatingsStore.from_env()):
        assert store.preset.name == "django"
        assert store.preset.layout == DjangoSchema(ratings_table="reviews_review")
        assert store.safe_url() == "postgresql+psycopg2://app:***@db.local/recs"
        assert "hunter2" not in repr(store.engine().url) and "hunter2" not in repr(store)


def test_store_round_trip(ratings_db: RatingsStore) -> None:
    assert ratings_db.engine() is ratings_db.engine()  # one cached pool per URL
    ratings_db.insert_movies(pd.DataFrame({"id": [1, 2], "title": ["One", "Two"]}))
    frame = pd.DataFrame(
        {"user_id": [7, 8], "movie_id": [1, 2], "rating": [4.0, 2.0], "timestamp": [10, 20]}
    )
    assert ratings_db.insert_ratings(frame) == 2
    assert ratings_db.count_ratings() == 2
    got = ratings_db.read_ratings()
    assert got[["user_id", "movie_id", "rating", "timestamp"]].equals(frame)
    assert ratings_db.movie_titles() == {1: "One", 2: "Two"}

    preds = pd.DataFrame({"user_id": [7, 8], "movie_id": [2, 1], "rank": [1, 1], "score": [3.5, 4]})
    assert ratings_db.replace_predictions(preds, "v1") == 2
    assert ratings_db.replace_predictions(preds.iloc[:1], "v2", users=[7]) == 1
    table = ratings_db.read_predictions()
    assert dict(zip(table["user_id"], table["model_version"], strict=True)) == {7: "v2", 8: "v1"}
    assert ratings_db.read_predictions(user_id=8)["movie_id"].tolist() == [1]


def test_resource_provides_a_store_inside_an_asset(ratings_db: RatingsStore) -> None:
    ratings_db.insert_ratings(
        pd.DataFrame({"user_id": [1], "movie_id": [1], "rating": [5.0], "timestamp": [1]})
    )

    @dg.asset
    def n_ratings(ratings_db: dg.ResourceParam[RatingsStore]) -> int:
        assert isinstance(ratings_db, RatingsStore)
        return ratings_db.count_ratings()

    resource = RatingsDatabase(url=ratings_db.url)
    result = dg.materialize([n_ratings], resources={"ratings_db": resource})
    assert result.success and result.output_for_node("n_ratings") == 1


# --- CLI -----------------------------------------------------------------------------------


def test_cli_demo_data_end_to_end(recsys_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo-data", "--users", "60", "--movies", "80", "--ratings", "2000", "--seed", "3"]
    argv.append("--if-empty")  # empty database: generates as usual
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "2000 demo ratings" in out and "80 movies" in out
    assert str(recsys_home / "ratings.db") in out

    database = RatingsStore.from_env()
    assert database.count_ratings() == 2000
    assert len(database.movie_titles()) == 80
    assert database.read_ratings()["user_id"].nunique() == 60

    # --if-empty leaves a populated database alone.
    assert cli.main(["demo-data", "--if-empty", "--ratings", "500"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert database.count_ratings() == 2000


def test_cli_import_movielens_end_to_end(
    recsys_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "ml-latest-small"
    data.mkdir()
    (data / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,4.5,964982703\n1,20,3.0,964981247\n"
        "2,10,5.0,964982224\n"
    )
    (data / "movies.csv").write_text(
        'movieId,title,genres\n10,"American President, The (1995)",Comedy\n20,Heat (1995),Action\n'
    )
    assert cli.main(["import-movielens", str(data)]) == 0
    assert "imported 3 ratings" in capsys.readouterr().out
    database = RatingsStore.from_env()
    got = database.read_ratings()
    assert got["rating"].tolist() == [4.5, 3.0, 5.0]
    assert database.movie_titles()[10] == "American President, The (1995)"

    # A second import without --replace would duplicate everything: refused.
    assert cli.main(["import-movielens", str(data)]) == 2
    assert "--replace" in capsys.readouterr().err
    assert database.count_ratings() == 3
    assert cli.main(["import-movielens", str(data / "ratings.csv"), "--replace"]) == 0
    assert database.count_ratings() == 3


def test_cli_bad_input_returns_2(
    recsys_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert cli.main(["import-movielens", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err and err.count("\n") == 1
    assert not (recsys_home / "ratings.db").exists()  # nothing touched on bad input

    assert cli.main(["demo-data", "--users", "2", "--movies", "2", "--ratings", "5"]) == 2
    assert "exceeds" in capsys.readouterr().err
    assert cli.main(["demo-data", "--users", "0"]) == 2
    assert cli.main([]) == 2
    assert cli.main(["no-such-command"]) == 2


def test_cli_run_subcommand_options() -> None:
    args = cli.build_parser().parse_args(
        ["run", "--n-epochs", "3", "--top-n", "5", "--no-demo-data"]
    )
    assert (args.n_epochs, args.folds, args.top_n, args.no_demo_data) == (3, None, 5, True)
    assert args.handler is cli.cmd_run
    # What is not given is None: the job's own defaults apply (tests/cli/test_run.py).
    defaults = cli.build_parser().parse_args(["run"])
    given = (defaults.n_epochs, defaults.folds, defaults.top_n, defaults.engine, defaults.tuning)
    assert given == (None,) * 5 and defaults.no_demo_data is False
    assert cli.build_parser().parse_args(["run", "--engine", "surprise"]).engine == "surprise"
