"""user_predictions: atomic replacement, per-user refresh, typed reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recsys_assets import db
from recsys_assets.db.predictions import prediction_versions
from recsys_assets_tests.db.frames import predictions_frame


def test_replace_predictions_replaces_everything(engine: Engine) -> None:
    assert db.replace_predictions(engine, predictions_frame([1, 2]), "v1", created_at=111) == 6
    assert db.replace_predictions(engine, predictions_frame([2, 3], n=2), "v2", created_at=222) == 4
    got = db.read_predictions(engine)
    assert got["user_id"].tolist() == [2, 2, 3, 3]
    assert set(got["model_version"]) == {"v2"}
    assert set(got["created_at"]) == {222}
    assert got["rank"].tolist() == [1, 2, 1, 2]
    assert got["score"].dtype == np.float64 and got["movie_id"].dtype == np.int64
    one = db.read_predictions(engine, user_id=3)
    assert one["user_id"].tolist() == [3, 3] and one["movie_id"].tolist() == [100, 101]


def test_replace_predictions_for_given_users_only(engine: Engine) -> None:
    db.replace_predictions(engine, predictions_frame([1, 2, 3]), "v1")
    written = db.replace_predictions(
        engine, predictions_frame([2], n=1, score0=9.0), "v2", users=[2]
    )
    assert written == 1
    got = db.read_predictions(engine)
    assert got.groupby("user_id")["model_version"].agg(set).to_dict() == {
        1: {"v1"},
        2: {"v2"},
        3: {"v1"},
    }
    assert db.read_predictions(engine, user_id=2)["score"].tolist() == [9.0]
    # A listed user with no new rows just loses the old ones.
    db.replace_predictions(engine, predictions_frame([]), "v3", users=[3])
    assert sorted(set(db.read_predictions(engine)["user_id"])) == [1, 2]
    with pytest.raises(ValueError, match="not listed"):
        db.replace_predictions(engine, predictions_frame([1, 4]), "v4", users=[1])


def test_failed_replace_keeps_previous_predictions(engine: Engine) -> None:
    db.replace_predictions(engine, predictions_frame([1, 2, 3]), "good")
    before = db.read_predictions(engine)

    # NOT NULL violation in the third batch: the delete and two batches already ran.
    bad = predictions_frame([4, 5, 6]).astype({"user_id": object})
    bad.loc[7, "user_id"] = None
    with pytest.raises(sa.exc.IntegrityError):
        db.replace_predictions(engine, bad, "broken", batch_size=3)
    pd.testing.assert_frame_equal(db.read_predictions(engine), before)

    # Non-numeric score: rejected while binding the second batch.
    bad_score = predictions_frame([4, 5]).astype({"score": object})
    bad_score.loc[4, "score"] = "high"
    with pytest.raises(sa.exc.StatementError):
        db.replace_predictions(engine, bad_score, "broken", batch_size=2)
    pd.testing.assert_frame_equal(db.read_predictions(engine), before)

    # Same guarantee for a per-user replace.
    with pytest.raises(sa.exc.IntegrityError):
        db.replace_predictions(engine, bad, "broken", users=[4, 5, 6], batch_size=3)
    pd.testing.assert_frame_equal(db.read_predictions(engine), before)


def test_read_predictions_empty_is_typed(engine: Engine) -> None:
    got = db.read_predictions(engine)
    assert got.empty and list(got.columns) == list(db.PREDICTION_COLUMNS)
    assert got["user_id"].dtype == np.int64 and got["score"].dtype == np.float64


def test_prediction_versions_say_what_the_table_holds(any_engine: Engine, tmp_path) -> None:
    missing = db.make_engine(f"sqlite:///{tmp_path / 'none.db'}", create=True)
    assert prediction_versions(missing) == []
    assert prediction_versions(any_engine) == []
    db.replace_predictions(any_engine, predictions_frame([1, 2, 3]), "v1")
    assert prediction_versions(any_engine) == ["v1"]
    db.replace_predictions(any_engine, predictions_frame([2], n=1), "v2", users=[2])
    assert sorted(prediction_versions(any_engine)) == ["v1", "v2"]
    assert len(prediction_versions(any_engine, limit=1)) == 1
