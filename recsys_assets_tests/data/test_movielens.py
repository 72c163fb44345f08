"""MovieLens readers on tiny files written in tmp_path (the real datasets are never bundled)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_assets.data.movielens import read_movielens

RATING_DTYPES = {
    "user_id": np.int64,
    "movie_id": np.int64,
    "rating": np.float64,
    "timestamp": np.int64,
}


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    root = tmp_path / "ml-100k"
    root.mkdir()
    (root / "u.data").write_text(
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t242\t1\t878887116\n"
    )
    # latin-1, a stray quote, and the trailing genre flags of the real file.
    (root / "u.item").write_bytes(
        "242|Kolya (1996)|24-Jan-1997||http://x|0|0|1\n"
        '302|L.A. Confidential "Cut" (1997)|01-Jan-1997||http://y|0|1|0\n'
        "303|Café au lait (1993)|01-Jan-1993||http://z|0|0|0\n".encode("latin-1")
    )
    return root


@pytest.fixture
def ml_latest(tmp_path: Path) -> Path:
    root = tmp_path / "ml-latest-small"
    root.mkdir()
    (root / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,11,3.5,964981247\n"
        "5,1,0.5,847434962\n"
    )
    (root / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n',
        encoding="utf-8",
    )
    return root


def test_ml100k_directory(ml100k: Path) -> None:
    movies, ratings = read_movielens(ml100k)
    assert dict(ratings.dtypes) == RATING_DTYPES
    assert ratings.values.tolist() == [
        [196, 242, 3, 881250949],
        [186, 302, 3, 891717742],
        [22, 242, 1, 878887116],
    ]
    assert movies["id"].dtype == np.int64
    assert dict(zip(movies["id"], movies["title"], strict=True)) == {
        242: "Kolya (1996)",
        302: 'L.A. Confidential "Cut" (1997)',
        303: "Café au lait (1993)",
    }


def test_ml100k_ratings_file_finds_titles_beside_it(ml100k: Path) -> None:
    movies_dir, ratings_dir = read_movielens(ml100k)
    movies_file, ratings_file = read_movielens(str(ml100k / "u.data"))
    pd.testing.assert_frame_equal(ratings_dir, ratings_file)
    pd.testing.assert_frame_equal(movies_dir, movies_file)


def test_ml_latest_directory_half_stars_and_quoted_titles(ml_latest: Path) -> None:
    movies, ratings = read_movielens(ml_latest)
    assert dict(ratings.dtypes) == RATING_DTYPES
    assert ratings["rating"].tolist() == [4.0, 3.5, 0.5]
    assert ratings["user_id"].tolist() == [1, 1, 5]
    assert ratings["timestamp"].tolist() == [964982703, 964981247, 847434962]
    assert movies.to_dict("list") == {
        "id": [1, 11],
        "title": ["Toy Story (1995)", "American President, The (1995)"],
    }
    _, direct = read_movielens(ml_latest / "ratings.csv")
    pd.testing.assert_frame_equal(direct, ratings)


def test_ml1m_dat_format(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n2::1::3::978298413\n")
    (tmp_path / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation\n1193::Star Wars: Episode IV (1977)::Sci-Fi\n".encode(
            "latin-1"
        )
    )
    movies, ratings = read_movielens(tmp_path)
    assert ratings.values.tolist() == [[1, 1193, 5, 978300760], [2, 1, 3, 978298413]]
    assert movies["title"].tolist() == ["Toy Story (1995)", "Star Wars: Episode IV (1977)"]


def test_missing_titles_file_uses_placeholders_for_rated_movies(ml_latest: Path) -> None:
    (ml_latest / "movies.csv").unlink()
    with pytest.warns(UserWarning, match="movies.csv"):
        movies, ratings = read_movielens(ml_latest / "ratings.csv")
    assert len(ratings) == 3
    assert movies.to_dict("list") == {"id": [1, 11], "title": ["Movie 1", "Movie 11"]}


def test_titles_file_missing_some_rated_ids(ml100k: Path) -> None:
    with (ml100k / "u.data").open("a") as f:
        f.write("5\t999\t4\t881250950\n")
    movies, _ = read_movielens(ml100k)
    assert movies["id"].tolist() == [242, 302, 303, 999]
    assert movies["title"].iloc[-1] == "Movie 999"


def test_errors_name_the_path_and_expected_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(FileNotFoundError, match="absent"):
        read_movielens(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"u\.data.*ratings\.csv"):
        read_movielens(empty)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        read_movielens(other)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,x,4.0,5\n")
    with pytest.raises(ValueError, match="ratings.csv"):
        read_movielens(broken)
