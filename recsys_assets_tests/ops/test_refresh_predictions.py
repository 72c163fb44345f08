"""refresh_predictions_job: rescoring a few users with `latest`, without retraining."""

import dagster as dg
import numpy as np
import pandas as pd

from recsys_assets.jobs import refresh_predictions_job
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets.serving import Recommender
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


def _null_ratings(pairs: pd.DataFrame, timestamp: int) -> pd.DataFrame:
    return pairs[["user_id", "movie_id"]].assign(rating=None, timestamp=timestamp)


def _suggested(table: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The (user, movie) pairs of `pairs` that `table` still suggests."""
    return table.merge(pairs[["user_id", "movie_id"]], on=["user_id", "movie_id"])


def test_movies_rated_without_a_value_are_not_suggested_by_ease(recsys_home, clustered_db):
    """The issue's case with EASE shipped: every user gets a NULL rating of the movie at the top
    of their list; neither the next run, nor a refresh, nor serving suggests it again."""
    ratings_db = clustered_db
    store = ArtifactStore(str(recsys_home / "models" / "surprise"))
    assert _materialize(recsys_home, ratings_db).success
    assert store.latest_manifest()["ranking"]["ranker"] == "ease"  # the data make EASE ship
    before = ratings_db.read_predictions()
    assert set(before["source"]) == {"ease"} and before["user_id"].nunique() == 120
    top = before[before["rank"] == 1]
    ratings_db.insert_ratings(_null_ratings(top, 9))

    assert _materialize(recsys_home, ratings_db).success  # trains without the NULL rows
    assert store.latest_manifest()["ranking"]["ranker"] == "ease"
    full = ratings_db.read_predictions()
    assert set(full["source"]) == {"ease"}
    assert full.groupby("user_id").size().eq(10).all() and full["user_id"].nunique() == 120
    assert _suggested(full, top).empty
    # Only the NULL-rated movie left each list: the rest moved up one place (EASE's scores,
    # from the rated movies alone, are unchanged; the run was retrained on the same ratings).
    for user, rows in full.groupby("user_id"):
        was = before.loc[before["user_id"] == user, "movie_id"].tolist()
        assert rows["movie_id"].tolist()[:9] == was[1:]

    # The refresh op: another NULL rating of each user's new top movie.
    second = full[full["rank"] == 1]
    ratings_db.insert_ratings(_null_ratings(second, 10))
    users = sorted(full["user_id"].unique().tolist())
    assert _refresh(recsys_home, ratings_db, users).success
    refreshed = ratings_db.read_predictions()
    assert set(refreshed["source"]) == {"ease"} and len(refreshed) == 1200
    assert _suggested(refreshed, top).empty and _suggested(refreshed, second).empty

    # Serving: given the user's NULL-rated movies (as `recsys recommend` reads them), the
    # same lists as the refreshed table.
    rec = Recommender(store)
    unrated = ratings_db.read_unrated_pairs()
    for user, rows in refreshed.groupby("user_id"):
        exclude = tuple(unrated.loc[unrated["user_id"] == user, "movie_id"].tolist())
        assert len(exclude) == 2
        got = rec.recommend(user, n=10, exclude=exclude)
        assert [r.movie_id for r in got] == rows["movie_id"].tolist()
        assert {r.source for r in got} == {"ease"}


def test_refresh_of_more_than_500_users(recsys_home, clustered_db):
    """The reads and the delete go through `IN` lists of 500 users: a refresh of 1,250 users
    (three lists) sees every user's new and NULL ratings and replaces every user's rows once.
    Each user rates the top of their list and NULL-rates the second, so a user left out of
    any list keeps a movie they rated, or two generations of rows."""
    ratings_db = clustered_db
    assert _materialize(recsys_home, ratings_db).success
    # 1,130 newcomers the model never saw (most-popular lists), one rating each.
    newcomers = np.arange(10_001, 11_131)
    movie = np.random.default_rng(7).integers(1, 151, newcomers.size)
    ratings_db.insert_ratings(
        pd.DataFrame({"user_id": newcomers, "movie_id": movie, "rating": 4.0, "timestamp": 9})
    )
    users = sorted({*ratings_db.read_predictions()["user_id"].tolist(), *newcomers.tolist()})
    assert len(users) == 1250
    assert _refresh(recsys_home, ratings_db, users).success  # now every user has a list
    before = ratings_db.read_predictions()
    assert len(before) == 12_500

    rated = before[before["rank"] == 1]
    unrated = before[before["rank"] == 2]
    ratings_db.insert_ratings(rated[["user_id", "movie_id"]].assign(rating=5.0, timestamp=10))
    ratings_db.insert_ratings(_null_ratings(unrated, 10))
    result = _refresh(recsys_home, ratings_db, users)
    assert result.success
    (event,) = result.asset_materializations_for_node("refresh_user_predictions")
    assert event.metadata["users"].value == 1250 and event.metadata["rows"].value == 12_500
    after = ratings_db.read_predictions()
    assert len(after) == 12_500 and sorted(after["user_id"].unique().tolist()) == users
    ranks = after.groupby("user_id")["rank"].apply(list)
    assert ranks.map(lambda r: sorted(r) == list(range(1, 11))).all()
    assert _suggested(after, rated).empty and _suggested(after, unrated).empty
    # Newcomers' popularity lists move up two places (EASE's change: a rating is evidence).
    for user in newcomers[::97].tolist():
        was = before.loc[before["user_id"] == user, "movie_id"].tolist()
        assert after.loc[after["user_id"] == user, "movie_id"].tolist()[:8] == was[2:]
    source = after.groupby("user_id")["source"].first()
    assert set(source[newcomers]) == {"popular"}
    assert set(source.drop(newcomers)) == {"ease"}


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
