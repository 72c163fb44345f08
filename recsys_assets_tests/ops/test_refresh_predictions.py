"""refresh_predictions_job: rescoring a few users with `latest`, without retraining."""

import dagster as dg
import pandas as pd

from recsys_assets.jobs import refresh_predictions_job
from recsys_assets_tests.assets.test_graph import _materialize
from recsys_assets_tests.conftest import make_resources


def _refresh(home, database, user_ids, instance=None, top_n=10):
    return refresh_predictions_job.execute_in_process(
        run_config={
            "ops": {"refresh_user_predictions": {"config": {"user_ids": user_ids, "top_n": top_n}}}
        },
        resources=make_resources(home, database),
        instance=instance,
        raise_on_error=False,
    )


def test_refresh_excludes_new_ratings_and_leaves_other_users_alone(recsys_home, demo_db):
    assert _materialize(recsys_home, demo_db).success
    before = demo_db.read_predictions()
    user = int(before["user_id"].iloc[0])
    top_movies = before[before["user_id"] == user]["movie_id"].head(3).tolist()
    demo_db.insert_ratings(
        pd.DataFrame(
            {"user_id": user, "movie_id": top_movies, "rating": [5.0, 1.0, 3.0], "timestamp": 9}
        )
    )
    new_user = 10_000  # not in the model: gets the bias-only ranking
    demo_db.insert_ratings(
        pd.DataFrame({"user_id": [new_user], "movie_id": [1], "rating": [4.0], "timestamp": 9})
    )

    with dg.instance_for_test() as instance:
        result = _refresh(recsys_home, demo_db, [user, new_user], instance=instance)
        assert result.success
        (event,) = result.asset_materializations_for_node("refresh_user_predictions")
    assert event.asset_key == dg.AssetKey("user_predictions")
    meta = {k: v.value for k, v in event.metadata.items()}
    assert meta["mode"] == "incremental" and meta["users"] == 2 and meta["rows"] == 20

    after = demo_db.read_predictions()
    mine = after[after["user_id"] == user]
    assert len(mine) == 10 and not set(top_movies) & set(mine["movie_id"])
    assert (mine["model_version"] == before["model_version"].iloc[0]).all()
    newcomer = after[after["user_id"] == new_user]
    assert len(newcomer) == 10 and 1 not in set(newcomer["movie_id"])
    others_before = before[before["user_id"] != user].reset_index(drop=True)
    others_after = after[~after["user_id"].isin([user, new_user])].reset_index(drop=True)
    pd.testing.assert_frame_equal(others_before, others_after)


def test_refresh_without_a_model_fails_clearly_and_writes_nothing(recsys_home, demo_db):
    result = _refresh(recsys_home, demo_db, [1])
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert "no trained model to refresh predictions with" in message
    # A Failure that is not a transient DB error is final: no retry.
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert demo_db.read_predictions().empty


def test_movies_rated_without_a_value_are_not_suggested(recsys_home, demo_db):
    """A NULL rating is not trained on, but the user has seen the movie: neither the full
    user_predictions nor the refresh suggests it to them (other users may still get it)."""
    assert _materialize(recsys_home, demo_db).success
    before = demo_db.read_predictions()
    user = int(before["user_id"].iloc[0])
    first = before[before["user_id"] == user]["movie_id"].head(2).tolist()
    demo_db.insert_ratings(
        pd.DataFrame({"user_id": user, "movie_id": first, "rating": None, "timestamp": 9})
    )
    assert _materialize(recsys_home, demo_db).success  # full run: trains without them
    full = demo_db.read_predictions()
    assert len(full[full["user_id"] == user]) == 10
    assert not set(first) & set(full.loc[full["user_id"] == user, "movie_id"])
    assert set(first) & set(full.loc[full["user_id"] != user, "movie_id"])

    later = full[full["user_id"] == user]["movie_id"].head(2).tolist()
    demo_db.insert_ratings(
        pd.DataFrame({"user_id": user, "movie_id": later, "rating": None, "timestamp": 10})
    )
    assert _refresh(recsys_home, demo_db, [user]).success
    mine = demo_db.read_predictions(user_id=user)
    assert len(mine) == 10 and not set(first + later) & set(mine["movie_id"])


def test_refresh_cleans_with_the_scale_the_champion_was_trained_with(recsys_home, demo_db):
    from recsys_assets.definitions import all_assets, all_checks
    from recsys_assets_tests.conftest import FAST_CONFIG

    # The champion was trained with a 0.5-10 scale (run config, as `recsys run
    # --rating-scale 0.5,10` sets it); the environment still says the default 0.5-5.
    run_config = {
        **FAST_CONFIG,
        "ops": {
            **FAST_CONFIG["ops"],
            "ratings_df": {"config": {"rating_min": 0.5, "rating_max": 10.0}},
        },
    }
    with dg.instance_for_test() as instance:
        trained = dg.materialize(
            [*all_assets, *all_checks],
            resources=make_resources(recsys_home, demo_db),
            run_config=run_config,
            instance=instance,
        )
        assert trained.success
        before = demo_db.read_predictions()
        user = int(before["user_id"].iloc[0])
        top = int(before[before["user_id"] == user]["movie_id"].iloc[0])
        # Within the champion's scale, outside the default one: a rating, so never suggested.
        demo_db.insert_ratings(
            pd.DataFrame({"user_id": [user], "movie_id": [top], "rating": [8.0], "timestamp": 9})
        )
        assert _refresh(recsys_home, demo_db, [user], instance=instance).success
    mine = demo_db.read_predictions().query("user_id == @user")
    assert len(mine) == 10 and top not in set(mine["movie_id"])
