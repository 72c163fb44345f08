"""`Settings.from_env`: the README's defaults, typed values, errors that name the variable."""

import re
from pathlib import Path

import pytest

from recsys_assets.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parent.parent


def test_defaults_are_the_readmes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    home = (tmp_path / ".recsys").resolve()
    assert settings.recsys_home == home
    assert settings.database_url == f"sqlite:///{home / 'ratings.db'}"
    assert not settings.database_url_configured
    assert settings.schema_preset == "native"
    assert settings.django_layout == {
        "content_type": "movies.movie",
        "ratings_table": "ratings_rating",
        "movies_table": "movies_movie",
        "content_type_table": "django_content_type",
    }
    assert settings.io_manager_base == str(home / "storage")
    assert settings.models_dir == home / "models" / "surprise"
    assert settings.dagster_home == home / "dagster_home"
    assert settings.signing_key is None and settings.alert_webhook_url is None
    assert settings.timezone == "UTC"
    assert settings.sensor_interval_seconds == 60
    assert (
        settings.retrain_min_new_ratings,
        settings.retrain_min_new_fraction,
        settings.retrain_min_interval_seconds,
    ) == (1000, 0.0, 3600)
    assert (settings.db_max_retries, settings.db_retry_delay_seconds) == (3, 5.0)
    assert settings.executor is None  # each caller's default (multiprocess / in_process)
    assert (settings.rating_scale, settings.max_invalid_fraction) == ((0.5, 5.0), 0.05)


def test_values_are_typed_and_blank_means_unset(tmp_path):
    settings = Settings.from_env(
        {
            "RECSYS_HOME": str(tmp_path),
            "RECSYS_DATABASE_URL": "postgresql+psycopg2://u:secret@db/app",
            "RECSYS_SCHEMA": "django",
            "RECSYS_DJANGO_RATINGS_TABLE": " reviews_review ",
            "RECSYS_IO_BASE": "s3://bucket/storage",
            "RECSYS_SENSOR_INTERVAL_SECONDS": "5",
            "RECSYS_RETRAIN_MIN_NEW_FRACTION": "0.02",
            "RECSYS_EXECUTOR": "celery",
            "RECSYS_RATING_SCALE": " 1, 10 ",
            "RECSYS_MAX_INVALID_FRACTION": "0.2",
            "RECSYS_TIMEZONE": "  ",  # blank: the default
            "DAGSTER_HOME": str(tmp_path / "dh"),
            "UNRELATED": "ignored",
        }
    )
    assert settings.database_url_configured
    assert settings.database_url == "postgresql+psycopg2://u:secret@db/app"
    assert settings.schema_preset == "django"
    assert settings.django_layout["ratings_table"] == "reviews_review"
    assert settings.io_manager_base == "s3://bucket/storage"
    assert settings.sensor_interval_seconds == 5
    assert settings.retrain_min_new_fraction == 0.02
    assert settings.executor == "celery"
    assert (settings.rating_scale, settings.max_invalid_fraction) == ((1.0, 10.0), 0.2)
    assert settings.timezone == "UTC"
    assert settings.dagster_home == (tmp_path / "dh").resolve()
    # A URL with a password never shows in a repr (logs, tracebacks).
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RECSYS_SCHEMA": "djnago"}, "RECSYS_SCHEMA='djnago' is not one of native, django"),
        (
            {"RECSYS_EXECUTOR": "threads"},
            "RECSYS_EXECUTOR='threads' is not one of multiprocess, in_process, celery",
        ),
        (
            {"RECSYS_SENSOR_INTERVAL_SECONDS": "0"},
            "RECSYS_SENSOR_INTERVAL_SECONDS='0' must be >= 1",
        ),
        ({"RECSYS_DB_MAX_RETRIES": "three"}, "RECSYS_DB_MAX_RETRIES='three' is not a valid int"),
        (
            {"RECSYS_DB_RETRY_DELAY_SECONDS": "soon"},
            "RECSYS_DB_RETRY_DELAY_SECONDS='soon' is not a valid float",
        ),
        ({"RECSYS_TIMEZONE": "Mars/Olympus"}, "RECSYS_TIMEZONE='Mars/Olympus' is not a known"),
        ({"RECSYS_RATING_SCALE": "10"}, "RECSYS_RATING_SCALE='10' must be MIN,MAX, two numbers"),
        ({"RECSYS_RATING_SCALE": "10,1"}, "RECSYS_RATING_SCALE='10,1' must be MIN,MAX with"),
        ({"RECSYS_MAX_INVALID_FRACTION": "1.5"}, "RECSYS_MAX_INVALID_FRACTION='1.5' must be <= 1"),
    ],
)
def test_a_bad_value_names_the_variable(environ, message):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ)
    assert str(raised.value).startswith(message)
    assert isinstance(raised.value, ValueError)


def test_every_bad_variable_is_named_at_once():
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"RECSYS_RETRAIN_MIN_NEW_RATINGS": "lots", "RECSYS_SCHEMA": "x"})
    text = str(raised.value)
    assert "RECSYS_RETRAIN_MIN_NEW_RATINGS='lots'" in text and "RECSYS_SCHEMA='x'" in text


# Reads of the environment outside settings.py: numba's own variable, read where numba is set up.
ALLOWED_READERS = {"recsys_assets/ml/svd_sgd.py"}
ENV_READ = re.compile(r"os\.(?:environ\.get|getenv)\(|os\.environ\[[^\]]+\](?!\s*=[^=])")


def test_only_settings_reads_the_environment():
    """Every RECSYS_* (and DAGSTER_HOME) read goes through Settings.from_env: one parser, one
    set of defaults, one error format."""
    readers = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "recsys_assets").rglob("*.py")
        if path.name != "settings.py" and ENV_READ.search(path.read_text())
    }
    assert readers <= ALLOWED_READERS
