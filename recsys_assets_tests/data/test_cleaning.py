import numpy as np
import pandas as pd
import pytest

from recsys_assets.data.cleaning import clean_ratings, invalid_share_problem


def _raw(rows):
    return pd.DataFrame(rows, columns=["rating_id", "user_id", "movie_id", "rating", "timestamp"])


def test_drops_each_kind_of_bad_row_and_counts_it():
    raw = _raw(
        [
            (1, 1, 10, 4.0, 100),
            (2, 1, 11, None, 100),  # NULL
            (3, 1, 12, "abc", 100),  # text stored in a numeric column (SQLite allows it)
            (4, 1, 13, 7.0, 100),  # above the scale
            (5, 1, 14, 0.0, 100),  # below the scale
            (6, 2, 10, 2.0, 100),  # older duplicate of (2, 10)
            (7, 2, 10, 5.0, 200),  # latest (highest row id) wins
            (8, 2, 11, "3.5", 100),  # numeric text is a valid rating
            (9, 3, 10, 1.0, 300),  # same timestamp duplicates: the higher row id wins
            (10, 3, 10, 2.0, 300),
        ]
    )
    df, report = clean_ratings(raw, (0.5, 5.0))
    assert report.rows_read == 10
    assert report.dropped == {
        "bad_user_id": 0,
        "bad_movie_id": 0,
        "null_rating": 1,
        "non_numeric_rating": 1,
        "out_of_scale": 2,
        "duplicate_pair": 2,
    }
    assert report.rows_kept == 4 == len(df)
    assert report.rows_dropped == 6
    assert list(df.columns) == ["user_id", "movie_id", "rating", "timestamp"]
    got = {(u, m): r for u, m, r in df[["user_id", "movie_id", "rating"]].itertuples(index=False)}
    assert got == {(1, 10): 4.0, (2, 10): 5.0, (2, 11): 3.5, (3, 10): 2.0}
    # Half stars fit float32 exactly, so the compact dtype is used.
    assert df["user_id"].dtype == np.int32 and df["rating"].dtype == np.float32


def test_ratings_that_float32_cannot_hold_stay_float64():
    raw = _raw([(1, 1, 1, 3.7, 1), (2, 1, 2, 4.0, 1)])
    df, _ = clean_ratings(raw, (1, 5))
    assert df["rating"].dtype == np.float64 and sorted(df["rating"]) == [3.7, 4.0]


def test_scale_bounds_are_inclusive_and_validated():
    raw = _raw([(1, 1, 1, 0.5, 1), (2, 1, 2, 5.0, 1), (3, 1, 3, 5.5, 1)])
    df, report = clean_ratings(raw, (0.5, 5.0))
    assert sorted(df["rating"]) == [0.5, 5.0]
    assert report.dropped["out_of_scale"] == 1
    with pytest.raises(ValueError, match="min < max"):
        clean_ratings(raw, (5.0, 1.0))


def test_large_ids_keep_int64():
    raw = _raw([(1, 2**40, 1, 3.0, 1)])
    df, _ = clean_ratings(raw, (1, 5))
    assert df["user_id"].dtype == np.int64 and df["user_id"].iloc[0] == 2**40


def _reference_clean(raw: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The same rules spelled out with pandas: the last row by `order` per pair, sorted."""
    df = raw.dropna(subset=["rating"]).sort_values(order, kind="stable")
    df = df.drop_duplicates(["user_id", "movie_id"], keep="last")
    return df.sort_values(["user_id", "movie_id"]).reset_index(drop=True)


@pytest.mark.parametrize("with_row_ids", [True, False])
def test_latest_duplicate_kept_on_many_random_collisions(with_row_ids):
    rng = np.random.default_rng(7)
    n = 20_000
    raw = pd.DataFrame(
        {
            "user_id": rng.integers(1, 60, n),
            "movie_id": rng.integers(1, 80, n),
            "rating": rng.integers(1, 6, n).astype(float),
            "timestamp": rng.integers(0, 5, n),  # many equal timestamps within a pair
            "rating_id": rng.permutation(n) + 1,
        }
    )
    if with_row_ids:
        # The database's row id orders a pair's ratings, whatever their timestamps say.
        expected = _reference_clean(raw, ["rating_id"])
    else:
        # Without row ids the latest timestamp wins, then the later row.
        raw["rating_id"] = np.arange(n)
        expected = _reference_clean(raw, ["timestamp", "rating_id"])
    given = raw if with_row_ids else raw.drop(columns="rating_id")
    df, report = clean_ratings(given, (1, 5))
    assert report.dropped["duplicate_pair"] == n - len(expected)
    for column in ("user_id", "movie_id", "rating", "timestamp"):
        assert df[column].tolist() == expected[column].tolist(), column


def test_bad_ids_are_dropped_and_counted_by_column():
    # What SQLite's untyped columns can hand back: text, fractions, NULL ids.
    raw = _raw(
        [
            (1, 1, 10, 4.0, 100),
            (2, "bob", 10, 4.0, 100),  # text user id
            (3, 1.5, 10, 4.0, 100),  # fractional user id
            (4, 2, "x", 4.0, 100),  # text movie id
            (5, None, 11, 3.0, 100),  # missing user id
            (6, "x", "y", None, 100),  # both bad (and a NULL rating): counted once, as user
            (7, "3", "12", 2.0, 100),  # whole numbers as text are fine
        ]
    )
    df, report = clean_ratings(raw, (0.5, 5.0))
    assert report.dropped["bad_user_id"] == 4
    assert report.dropped["bad_movie_id"] == 1
    assert report.dropped["null_rating"] == 0
    assert report.rows_kept == 2 and report.rows_dropped == 5
    assert sorted(zip(df["user_id"], df["movie_id"], strict=True)) == [(1, 10), (3, 12)]


NOW = 1_700_000_000  # the cleaning's clock in these tests
YEAR_2100 = 4_102_444_800


def test_a_future_or_missing_timestamp_never_outranks_a_newer_rerating():
    raw = _raw(
        [
            (1, 1, 10, 1.0, YEAR_2100),  # a bad clock dated this 2100
            (2, 1, 10, 4.0, NOW - 60),  # the user's newer re-rating
            (3, 2, 10, 2.0, NOW - 120),
            (4, 2, 10, 5.0, 0),  # re-rated; the timestamp was NULL (read as 0)
            (5, 3, 10, 3.0, 0),  # kept, flagged
        ]
    )
    df, report = clean_ratings(raw, (0.5, 5.0), now=NOW)
    got = {(u, m): r for u, m, r in df[["user_id", "movie_id", "rating"]].itertuples(index=False)}
    assert got == {(1, 10): 4.0, (2, 10): 5.0, (3, 10): 3.0}
    assert report.dropped["duplicate_pair"] == 2
    assert report.flagged == {"missing_timestamp": 2, "future_timestamp": 1}


def test_a_day_of_clock_skew_is_not_future():
    raw = _raw([(1, 1, 10, 4.0, NOW + 3600), (2, 1, 11, 4.0, NOW + 2 * 86_400)])
    _, report = clean_ratings(raw, (0.5, 5.0), now=NOW)
    assert report.flagged == {"missing_timestamp": 0, "future_timestamp": 1}


def test_a_wrong_scale_is_reported_with_the_setting_to_change():
    # A 1-10 site under the default 0.5-5 scale: most rows are out of scale.
    ratings = [float(r) for r in range(1, 11)] * 10
    raw = _raw([(i, i % 7, i, r, 100) for i, r in enumerate(ratings, 1)])
    _, report = clean_ratings(raw, (0.5, 5.0))
    assert report.dropped["out_of_scale"] == 50 and report.invalid_fraction == 0.5
    problem = invalid_share_problem(report, 0.05)
    assert problem is not None
    assert "50 of 100 ratings (50.0%)" in problem and "out_of_scale 50" in problem
    assert "0.5–5" in problem and "run from 1 to 10" in problem
    assert "RECSYS_RATING_SCALE" in problem and "--rating-scale" in problem
    assert invalid_share_problem(report, 0.5) is None  # at the limit: allowed
    # The right scale keeps them all.
    _, report = clean_ratings(raw, (1, 10))
    assert report.rows_invalid == 0 and invalid_share_problem(report, 0.0) is None


def test_nulls_and_rerating_do_not_count_as_invalid():
    raw = _raw(
        [(1, 1, 10, None, 1), (2, 1, 11, None, 1), (3, 1, 12, 3.0, 1), (4, 1, 12, 4.0, 2)]
        + [(5, 1, 13, "x", 1)]
    )
    _, report = clean_ratings(raw, (0.5, 5.0))
    assert report.rows_dropped == 4 and report.rows_invalid == 1
    problem = invalid_share_problem(report, 0.1)
    assert "non_numeric_rating 1" in problem and "RECSYS_MAX_INVALID_FRACTION" in problem
    assert "RECSYS_RATING_SCALE" not in problem
