"""Readers for the GroupLens MovieLens files, returning the project's (movies, ratings) frames.

Supported layouts (a directory, or the ratings file itself with the titles file beside it):

* ml-100k: ``u.data`` (tab-separated user, item, rating, unix time) + ``u.item``
  (pipe-separated, latin-1, ``id|title|...``).
* ml-latest / ml-20m / ml-25m / ml-32m: ``ratings.csv`` (``userId,movieId,rating,timestamp``,
  half stars) + ``movies.csv`` (``movieId,title,genres``, titles quoted when they hold commas).
* ml-1m / ml-10m: ``ratings.dat`` (``user::movie::rating::time``) + ``movies.dat``.

Output columns match `recsys_assets.data.demo`: movies[id int64, title], ratings[user_id int64,
movie_id int64, rating float64, timestamp int64]. When the titles file is missing, movies get
placeholder titles ("Movie <id>") so ratings can still be imported.

MovieLens files may not be redistributed: callers pass a path, nothing is copied or bundled.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

_RATING_DTYPES = {
    "user_id": np.int64,
    "movie_id": np.int64,
    "rating": np.float64,
    "timestamp": np.int64,
}
_RATING_COLUMNS = list(_RATING_DTYPES)

# ratings file name → (format, titles file name)
_LAYOUTS = {
    "u.data": ("100k", "u.item"),
    "ratings.csv": ("csv", "movies.csv"),
    "ratings.dat": ("dat", "movies.dat"),
}
_EXPECTED = "u.data (+ u.item), ratings.csv (+ movies.csv) or ratings.dat (+ movies.dat)"


def _read_100k(ratings_path: Path) -> pd.DataFrame:
    return pd.read_csv(
        ratings_path,
        sep="\t",
        header=None,
        names=_RATING_COLUMNS,
        usecols=range(4),
        dtype=_RATING_DTYPES,
        engine="c",
    )


def _read_csv_ratings(ratings_path: Path) -> pd.DataFrame:
    frame = pd.read_csv(
        ratings_path,
        usecols=["userId", "movieId", "rating", "timestamp"],
        dtype={
            "userId": np.int64,
            "movieId": np.int64,
            "rating": np.float64,
            "timestamp": np.int64,
        },
        engine="c",
    )
    return frame.rename(columns={"userId": "user_id", "movieId": "movie_id"})[_RATING_COLUMNS]


def _read_dat_ratings(ratings_path: Path) -> pd.DataFrame:
    # "::" needs pandas' slow python engine; splitting on ":" keeps the C parser and puts the
    # values in every other column (the empty fields between the two colons are skipped).
    frame = pd.read_csv(
        ratings_path,
        sep=":",
        header=None,
        usecols=[0, 2, 4, 6],
        names=["user_id", "_a", "movie_id", "_b", "rating", "_c", "timestamp"],
        dtype=_RATING_DTYPES,
        engine="c",
    )
    return frame[_RATING_COLUMNS]


def _read_titles(fmt: str, titles_path: Path) -> pd.DataFrame:
    if fmt == "100k":
        frame = pd.read_csv(
            titles_path,
            sep="|",
            header=None,
            usecols=[0, 1],
            names=["id", "title"],
            dtype={"id": np.int64, "title": object},
            encoding="latin-1",
            quoting=csv.QUOTE_NONE,  # titles contain stray quote characters
            engine="c",
        )
    elif fmt == "csv":
        frame = pd.read_csv(
            titles_path,
            usecols=["movieId", "title"],
            dtype={"movieId": np.int64, "title": object},
            encoding="utf-8",
            engine="c",
        ).rename(columns={"movieId": "id"})
    else:
        # Titles contain ':' ("Star Wars: Episode IV"), so the python engine's regex split it is.
        frame = pd.read_csv(
            titles_path,
            sep="::",
            header=None,
            usecols=[0, 1],
            names=["id", "title", "genres"],
            dtype={"id": np.int64, "title": object},
            encoding="latin-1",
            engine="python",
        )
    frame["title"] = frame["title"].fillna("").astype(object)
    return frame[["id", "title"]].drop_duplicates(subset="id").reset_index(drop=True)


def _locate(path: Path) -> tuple[str, Path, Path]:
    """(format, ratings file, titles file) for a dataset directory or a ratings file."""
    if path.is_dir():
        for name, (fmt, titles) in _LAYOUTS.items():
            if (path / name).is_file():
                return fmt, path / name, path / titles
        raise FileNotFoundError(f"no MovieLens ratings file in {path}: expected {_EXPECTED}")
    if path.is_file():
        layout = _LAYOUTS.get(path.name)
        if layout is None:
            raise ValueError(
                f"{path} is not a recognised MovieLens ratings file: expected {_EXPECTED}"
            )
        fmt, titles = layout
        return fmt, path, path.with_name(titles)
    raise FileNotFoundError(
        f"MovieLens path {path} does not exist (expected a directory with "
        f"{_EXPECTED}, or one of those ratings files)"
    )


def read_movielens(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a MovieLens dataset; return (movies[id, title], ratings[user_id, movie_id, rating,
    timestamp]).

    Raises FileNotFoundError when nothing usable is at `path`, ValueError when a file is not a
    recognised MovieLens ratings file or cannot be parsed.
    """
    fmt, ratings_path, titles_path = _locate(Path(path).expanduser())
    reader = {"100k": _read_100k, "csv": _read_csv_ratings, "dat": _read_dat_ratings}[fmt]
    try:
        ratings = reader(ratings_path)
    except (ValueError, KeyError) as exc:  # bad dtype / missing header column
        raise ValueError(f"could not parse MovieLens ratings file {ratings_path}: {exc}") from exc

    if titles_path.is_file():
        try:
            movies = _read_titles(fmt, titles_path)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"could not parse MovieLens titles file {titles_path}: {exc}") from exc
    else:
        warnings.warn(f"{titles_path} not found; using placeholder movie titles", stacklevel=2)
        movies = pd.DataFrame({"id": np.zeros(0, np.int64), "title": pd.Series(dtype=object)})

    # Every rated movie needs a row (titles files occasionally miss ids).
    missing = np.setdiff1d(ratings["movie_id"].unique(), movies["id"].to_numpy())
    if missing.size:
        extra = pd.DataFrame(
            {
                "id": missing,
                "title": pd.Series([f"Movie {i}" for i in missing.tolist()], dtype=object),
            }
        )
        movies = pd.concat([movies, extra], ignore_index=True)
    movies = movies.sort_values("id", kind="stable").reset_index(drop=True)
    movies["id"] = movies["id"].astype(np.int64)
    return movies, ratings.reset_index(drop=True)
