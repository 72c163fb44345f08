"""Small ratings / predictions frames for the database tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def ratings_frame(rows: list[tuple[int, int, float | None, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])


def predictions_frame(users: list[int], n: int = 3, score0: float = 5.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.repeat(users, n),
            "movie_id": np.tile(np.arange(100, 100 + n), len(users)),
            "rank": np.tile(np.arange(1, n + 1), len(users)),
            "score": np.tile(score0 - np.arange(n) * 0.1, len(users)),
        }
    )
