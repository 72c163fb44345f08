"""The `recsys` CLI as an unlucky user meets it: wrong URLs, empty or missing tables, bad
settings, a second run at once, a damaged model store. Every error is one `error:` line
naming the cause, and nothing is created or written where it should not be."""

from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy as sa

from recsys_assets import db
from recsys_assets.cli import describe_error, main
from recsys_assets.cli import run as cli_run
from recsys_assets.data.demo import generate_demo_ratings
from recsys_assets.db import RatingsStore
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets.run_lock import training_lock


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@pytest.fixture
def models(recsys_home):
    return recsys_home / "models" / "surprise"


def test_typo_in_database_url_creates_nothing_and_names_file_and_preset(
    recsys_home, monkeypatch, capsys, tmp_path
):
    missing = tmp_path / "typo" / "ratings.db"
    monkeypatch.setenv("RECSYS_DATABASE_URL", f"sqlite:///{missing}")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    line = _last_line(err)
    assert line.startswith("error: ") and str(missing) in line and "native" in line
    assert "Traceback" not in err
    assert not missing.parent.exists()
    assert not (recsys_home / "models").exists()  # nothing trained


def test_configured_empty_database_never_gets_demo_data(recsys_home, monkeypatch, capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    RatingsStore(url).ensure_schema()
    monkeypatch.setenv("RECSYS_DATABASE_URL", url)
    assert main(["run"]) == 2
    line = _last_line(capsys.readouterr().err)
    assert "no active movie ratings" in line and "never generated" in line
    assert RatingsStore(url).count_ratings() == 0
    # Explicit demo-data into it needs its flag too.
    assert main(["demo-data", "--ratings", "100"]) == 2
    assert "--into-configured-database" in _last_line(capsys.readouterr().err)
    assert RatingsStore(url).count_ratings() == 0
    args = ["demo-data", "--users", "10", "--movies", "20", "--ratings", "100"]
    assert main([*args, "--into-configured-database"]) == 0
    assert RatingsStore(url).count_ratings() == 100


def test_configured_database_without_the_ratings_table_is_not_altered(
    recsys_home, monkeypatch, capsys, tmp_path
):
    path = tmp_path / "other.db"
    with sa.create_engine(f"sqlite:///{path}").begin() as conn:
        conn.exec_driver_sql("CREATE TABLE unrelated (id INTEGER)")
    monkeypatch.setenv("RECSYS_DATABASE_URL", f"sqlite:///{path}")
    assert main(["run"]) == 2
    line = _last_line(capsys.readouterr().err)
    assert "'ratings' does not exist" in line and str(path) in line and "'native'" in line
    tables = sa.inspect(db.make_engine(f"sqlite:///{path}")).get_table_names()
    assert tables == ["unrelated"]


def test_unreachable_server_and_not_a_database_are_named_with_the_password_masked(
    recsys_home, monkeypatch, capsys, tmp_path
):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    url = f"postgresql+psycopg2://app@127.0.0.1:{port}/app?password=hunter2"
    monkeypatch.setenv("RECSYS_DATABASE_URL", url)
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    line = _last_line(err)
    assert "hunter2" not in err and "password=***" in line and "Connection refused" in line

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("RECSYS_DATABASE_URL", f"sqlite:///{junk}")
    assert main(["run"]) == 2
    line = _last_line(capsys.readouterr().err)
    assert str(junk) in line and "file is not a database" in line


def test_empty_embedded_database_after_training_gets_no_demo_data(recsys_home, capsys):
    RatingsStore.from_env().ensure_schema()
    ArtifactStore(recsys_home / "models" / "surprise").save({"m": 1}, {}, promote=True)
    assert main(["run"]) == 2
    assert "already trained" in _last_line(capsys.readouterr().err)
    assert RatingsStore.from_env().count_ratings() == 0


def test_bad_setting_is_one_error_line_naming_the_variable(recsys_home, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_SCHEMA", "djnago")
    assert main(["run"]) == 2
    assert "RECSYS_SCHEMA='djnago'" in _last_line(capsys.readouterr().err)


def test_unexpected_errors_name_the_file_and_hide_the_traceback(recsys_home, capsys):
    recsys_home.parent.mkdir(parents=True, exist_ok=True)
    recsys_home.write_text("a file where RECSYS_HOME should be a directory")
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert _last_line(err).startswith("error: ") and str(recsys_home) in _last_line(err)
    assert main(["--verbose", "run"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and _last_line(err).startswith("error: ")


def test_describe_error_names_file_and_variable():
    denied = PermissionError(13, "Permission denied", "/srv/recsys/models")
    assert describe_error(denied) == (
        "Permission denied: /srv/recsys/models (RECSYS_HOME must be writable)"
    )
    full = OSError(28, "No space left on device", "/srv/recsys/models/x.pkl")
    assert describe_error(full) == "No space left on device: /srv/recsys/models/x.pkl"
    assert describe_error(KeyError("x")) == "KeyError: 'x'"


def test_second_run_on_the_same_home_refuses_or_waits(recsys_home, capsys, monkeypatch):
    with training_lock(recsys_home):
        assert main(["run", "--no-demo-data"]) == 2
        line = _last_line(capsys.readouterr().err)
        assert "another `recsys run`" in line and f"pid {__import__('os').getpid()}" in line
        assert "--wait" in line

    # --wait queues behind the holder, then runs (and fails for its own reason: no data).
    held, waiting = threading.Event(), threading.Event()
    monkeypatch.setattr(cli_run, "_note", lambda message: waiting.set())

    def hold_until_the_second_run_waits():
        with training_lock(recsys_home):
            held.set()
            waiting.wait(60)

    holder = threading.Thread(target=hold_until_the_second_run_waits)
    holder.start()
    held.wait(60)
    assert main(["run", "--wait", "--no-demo-data"]) == 2
    assert waiting.is_set()
    assert "no active movie ratings" in _last_line(capsys.readouterr().err)
    holder.join()


def test_models_list_marks_broken_versions_and_promote_recovers_latest(models, capsys):
    good = ArtifactStore(models).save({"m": 1}, {"cv_metrics": {"rmse_mean": 0.9}}, promote=True)
    broken = ArtifactStore(models).save({"m": 2}, {}, promote=False)
    unreadable = ArtifactStore(models).save({"m": 3}, {}, promote=False)
    pkl = models / f"{broken['version']}.pkl"
    pkl.write_bytes(pkl.read_bytes()[:5])  # truncated
    (models / f"{unreadable['version']}.json").write_text("{")
    (models / "latest.json").write_text("not json")

    assert main(["models", "list"]) == 1
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows[good["version"]].endswith("champion  ok")
    assert rows[broken["version"]].endswith("BROKEN")
    assert rows[unreadable["version"]].endswith("BROKEN")
    assert f"BROKEN {broken['version']}: model file" in err and "size 5" in err
    assert "BROKEN latest.json" in err and "recsys models promote" in err

    assert main(["models", "promote", good["version"]]) == 0
    assert json.loads((models / "latest.json").read_text())["version"] == good["version"]
    assert main(["models", "promote", broken["version"]]) == 2
    assert "size 5 does not match" in _last_line(capsys.readouterr().err)


def test_a_garbage_champions_json_is_reported_then_repaired_by_promote(models, capsys):
    a = ArtifactStore(models).save({"m": 1}, {}, promote=True)
    b = ArtifactStore(models).save({"m": 2}, {}, promote=True)
    c = ArtifactStore(models).save({"m": 3}, {}, promote=False)
    (models / "champions.json").write_text("{garbage")

    assert main(["models", "list"]) == 1
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "champion" in rows[b["version"]] and "champion" not in rows[c["version"]]
    assert "BROKEN champions.json" in err and "rebuilds it" in err
    # rollback: repairs the history, then says it has no record to go back to; nothing moved.
    assert main(["models", "rollback"]) == 2
    err = capsys.readouterr().err
    assert "repaired: " in err and "no previous champion" in _last_line(err)
    assert ArtifactStore(models).latest_manifest()["version"] == b["version"]
    # promote: exits 0, and the pointer and the history both name c.
    assert main(["models", "promote", c["version"]]) == 0
    assert json.loads((models / "latest.json").read_text())["version"] == c["version"]
    live = [e for e in ArtifactStore(models).history() if not e["rolled_back_at"]]
    assert live[-1]["version"] == c["version"]
    assert main(["models", "rollback"]) == 0
    assert ArtifactStore(models).load_latest()[1]["version"] == b["version"]
    assert main(["models", "list"]) == 0, capsys.readouterr().err
    assert a["version"] not in ArtifactStore(models).champion_versions()  # {garbage names none


def test_a_promotion_that_cannot_record_its_history_changes_nothing(models, capsys):
    a = ArtifactStore(models).save({"m": 1}, {}, promote=True)
    b = ArtifactStore(models).save({"m": 2}, {}, promote=False)
    history = models / "champions.json"
    history.unlink()
    history.mkdir()  # cannot be read nor replaced: an I/O error at the history write
    assert main(["models", "promote", b["version"]]) != 0
    assert json.loads((models / "latest.json").read_text())["version"] == a["version"]
    history.rmdir()


def test_models_prune_keeps_champions_and_cleans_killed_writes(models, capsys):
    champion = ArtifactStore(models).save({"m": 0}, {}, promote=True)
    others = [ArtifactStore(models).save({"m": k}, {}, promote=False) for k in range(1, 4)]
    (models / ".x.pkl.999999999.abcdefgh.tmp").write_bytes(b"partial")  # no such pid
    assert main(["models", "prune", "--keep", "1"]) == 0
    out = capsys.readouterr().out
    assert "deleted 2 versions" in out
    left = sorted(p.name for p in models.iterdir())
    assert left == sorted(
        [
            f"{champion['version']}.json",
            f"{champion['version']}.pkl",
            f"{others[-1]['version']}.json",
            f"{others[-1]['version']}.pkl",
            "champions.json",
            "latest.json",
        ]
    )


def test_demo_data_into_a_new_embedded_database(recsys_home, capsys):
    assert not recsys_home.exists()
    assert main(["demo-data", "--users", "10", "--movies", "20", "--ratings", "100"]) == 0
    assert RatingsStore.from_env().count_ratings() == 100
    movies, ratings = generate_demo_ratings(n_users=5, n_movies=5, n_ratings=10)
    assert len(ratings) == 10 and len(movies) == 5


def test_failed_run_ends_with_the_steps_own_error_and_no_traceback(recsys_home, capsys):
    assert main(["demo-data", "--users", "3", "--movies", "5", "--ratings", "10"]) == 0
    capsys.readouterr()
    assert main(["run", "--folds", "2"]) == 1
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert 'File "' not in output and "Stack Trace" not in output
    assert _last_line(captured.err) == (
        "error: step ratings_df failed: too few ratings to cross-validate and train: 10 "
        "ratings from 3 users, need at least 20 ratings and 2 users"
    )
    assert main(["--verbose", "run", "--folds", "2"]) == 1
    captured = capsys.readouterr()
    assert 'File "' in captured.out + captured.err
    assert _last_line(captured.err).startswith("error: step ratings_df failed: too few ratings")
