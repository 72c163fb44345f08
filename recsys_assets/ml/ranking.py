"""Ranking quality (precision/recall/NDCG@k) and the ranking the pipeline ships.

Relevance rule, used everywhere in this project: for a user, the *relevant* movies are all of
the user's held-out ratings, whatever their value (a rating is evidence the user chose to
watch the movie). Lists exclude the movies the user rated in the training part, and metrics are
the mean over users with at least one held-out rating. With this rule ml-100k gives the issue's
reference figures (SVD-only NDCG@10 ≈ 0.10, most-popular ≈ 0.25).

Why a blend: ranking by predicted rating puts obscure movies with a few enthusiastic ratings
on top, while the movies a user goes on to watch are mostly popular ones that match their
taste. The shipped ranking key is

    popularity_weight * pop[i] + taste_weight * cos(taste[u], q[i]) + rating_weight * est[u, i]

with ``pop = count / max count`` in [0, 1], ``q[i]`` the SVD's item factors and ``taste[u]``
the mean item factors of the movies ``u`` rated (both from the same fitted SVD), and ``est``
the SVD's predicted rating. The weights are chosen on a validation split carved out of the
training data only (``choose_policy``); ``score`` stays the SVD's predicted rating.

Users with fewer than ``min_user_ratings`` training ratings (or unknown to the model) get the
popularity ranking (``source='popular'``); the others the blend (``source='svd'``), or, when
the policy's ``ranker`` is ``'ease'``, the EASE ranking model's list (``source='ease'``,
``ml.ease``; chosen over the blend on validation, ``ml.list_choice``). ``score`` is always the
SVD's predicted rating.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_assets.ml.arrays import lookup, top_k_indices, unique
from recsys_assets.ml.ease import EASEModel
from recsys_assets.ml.factors import SVDFactors, score_pairs
from recsys_assets.ml.topn import top_n
from recsys_assets.ml.workers import thread_map

__all__ = [
    "DEFAULT_GRID",
    "RankingPolicy",
    "choose_policy",
    "item_counts",
    "popularity_feature",
    "rank_users",
    "ranking_metrics",
    "taste_vectors",
]

# Candidate (taste_weight, rating_weight) pairs, popularity_weight fixed at 1: small enough to
# evaluate in a second or two per fold, wide enough to include "popularity only" (0, 0).
DEFAULT_GRID: tuple[tuple[float, float], ...] = tuple(
    (taste, rating) for taste in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0) for rating in (0.0, 0.05)
)
SOURCE_SVD = "svd"
SOURCE_POPULAR = "popular"
SOURCE_EASE = "ease"
RANKERS = (SOURCE_SVD, SOURCE_EASE)


@dataclass(frozen=True)
class RankingPolicy:
    """How the shipped top-N is ranked; stored in the model manifest under ``ranking``.

    The defaults rank by the SVD estimate alone (the seed's ranking); ``choose_policy``
    picks the blend weights.
    """

    popularity_weight: float = 0.0
    taste_weight: float = 0.0
    rating_weight: float = 1.0
    min_user_ratings: int = 1
    # Which model ranks warm users: 'svd' (the blend above) or 'ease' (the ranking model).
    ranker: str = SOURCE_SVD

    def __post_init__(self) -> None:
        if self.ranker not in RANKERS:
            raise ValueError(f"ranker must be one of {RANKERS}, got {self.ranker!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_manifest(cls, manifest: dict) -> RankingPolicy:
        # Models saved before the blend existed rank by the SVD estimate alone.
        ranking = manifest.get("ranking") or {}
        fields = cls.__dataclass_fields__
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in ranking.items() if k in fields})

    @classmethod
    def popularity_only(cls, min_user_ratings: int = 1) -> RankingPolicy:
        return cls(1.0, 0.0, 0.0, min_user_ratings)


def ranking_model_of(model: object, policy: RankingPolicy) -> EASEModel | None:
    """The EASE model an artifact carries (an attribute of the pickled SVD), if it ranks.

    Raises ``ValueError`` when the policy ranks with EASE but the artifact has none.
    """
    ranking_model = getattr(model, "ranking_model", None)
    if policy.ranker == SOURCE_EASE and not isinstance(ranking_model, EASEModel):
        raise ValueError(
            "the model's ranking policy ranks with EASE but its artifact carries no EASE model"
        )
    return ranking_model if policy.ranker == SOURCE_EASE else None


def item_counts(raw_iids: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """Ratings per movie among ``movies``, indexed like ``raw_iids`` (other movies ignored)."""
    inner = lookup(np.asarray(raw_iids, dtype=np.int64), np.asarray(movies, dtype=np.int64))
    return np.bincount(inner[inner >= 0], minlength=len(raw_iids)).astype(np.int64)


def popularity_feature(counts: np.ndarray) -> np.ndarray:
    """``count / max count``: 0 for unrated movies, 1 for the most rated."""
    counts = np.asarray(counts, dtype=np.float64)
    top = counts.max(initial=0.0)
    if top <= 0:
        return np.zeros_like(counts)
    return counts / top


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def taste_vectors(
    factors: SVDFactors, users: np.ndarray, rated_users: np.ndarray, rated_movies: np.ndarray
) -> np.ndarray:
    """Unit-length mean item factors of each user's rated movies (rows follow ``users``)."""
    row = lookup(users, rated_users)
    col = lookup(factors.raw_iids, rated_movies)
    keep = (row >= 0) & (col >= 0)
    rated = sp.csr_matrix(
        (np.ones(int(keep.sum())), (row[keep], col[keep])), shape=(users.size, factors.n_items)
    )
    rated.data[:] = 1.0  # duplicates count once
    return _unit_rows(np.asarray(rated @ np.asarray(factors.qi, dtype=np.float64)))


def rank_users(
    factors: SVDFactors,
    users: np.ndarray,
    rated_users: np.ndarray,
    rated_movies: np.ndarray,
    counts: np.ndarray,
    policy: RankingPolicy,
    n: int = 10,
    block_size: int = 2048,
    excluded: tuple[np.ndarray, np.ndarray] | None = None,
    ranking_model: EASEModel | None = None,
    n_threads: int | None = None,
) -> pd.DataFrame:
    """The shipped top-``n``: ``user_id, movie_id, rank, score, source`` per user.

    ``counts`` are training ratings per movie (``item_counts``), ``rated_*`` the training
    pairs (excluded from the lists, and counted for the cold-start rule). ``excluded``:
    further (users, movies) pairs kept out of the lists only — e.g. rated without a value.
    ``ranking_model``: the EASE model, needed when ``policy.ranker`` is ``'ease'``.
    ``n_threads``: blocks of users ranked side by side (None: one per CPU); same result.
    """
    if policy.ranker == SOURCE_EASE and ranking_model is None:
        raise ValueError("the ranking policy ranks with EASE but no ranking model was given")
    users = unique(np.asarray(users, dtype=np.int64))
    rated_users = np.asarray(rated_users, dtype=np.int64).ravel()
    rated_movies = np.asarray(rated_movies, dtype=np.int64).ravel()
    counts = np.asarray(counts, dtype=np.float64)
    pos = lookup(users, rated_users)
    per_user = np.bincount(pos[pos >= 0], minlength=users.size)
    # The taste vectors and the cold-start rule use the training pairs; the lists skip both.
    seen_users, seen_movies = rated_users, rated_movies
    if excluded is not None:
        seen_users = np.concatenate([rated_users, np.asarray(excluded[0], np.int64).ravel()])
        seen_movies = np.concatenate([rated_movies, np.asarray(excluded[1], np.int64).ravel()])
    known = lookup(factors.raw_uids, users) >= 0
    warm = known & (per_user >= policy.min_user_ratings)
    parts = []
    if warm.any() and policy.ranker == SOURCE_EASE:
        frame = ease_top_n(
            ranking_model,
            factors,
            users[warm],
            rated_users,
            rated_movies,
            counts,
            n,
            block_size,
            n_threads,
            seen=(seen_users, seen_movies),
        )
        parts.append(frame.assign(source=SOURCE_EASE))
    elif warm.any():
        bonus = None
        if policy.popularity_weight:
            bonus = policy.popularity_weight * popularity_feature(counts)
        user_vecs = item_vecs = None
        if policy.taste_weight:
            taste = taste_vectors(factors, users[warm], rated_users, rated_movies)
            user_vecs = policy.taste_weight * taste
            item_vecs = _unit_rows(np.asarray(factors.qi, dtype=np.float64))
        frame = top_n(
            factors,
            users[warm],
            seen_users,
            seen_movies,
            n=n,
            block_size=block_size,
            item_bonus=bonus,
            estimate_weight=policy.rating_weight,
            user_vectors=user_vecs,
            item_vectors=item_vecs,
            n_threads=n_threads,
        )
        parts.append(frame.assign(source=SOURCE_SVD))
    if (~warm).any():
        frame = top_n(
            factors,
            users[~warm],
            seen_users,
            seen_movies,
            n=n,
            block_size=block_size,
            item_bonus=counts,
            estimate_weight=0.0,
            n_threads=n_threads,
        )
        parts.append(frame.assign(source=SOURCE_POPULAR))
    if not parts:
        return top_n(factors, users, seen_users, seen_movies, n=n).assign(source="")
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["user_id", "rank"], kind="stable").reset_index(drop=True)


def ease_top_n(
    model: EASEModel,
    factors: SVDFactors,
    users: np.ndarray,
    rated_users: np.ndarray,
    rated_movies: np.ndarray,
    counts: np.ndarray,
    n: int,
    block_size: int = 2048,
    n_threads: int | None = None,
    seen: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """EASE's top-``n`` over the SVD's catalogue for ``users`` (sorted, unique raw ids).

    The order of ``EASEModel.catalogue_keys`` (ties by movie id), computed on the kept movies
    first: a row goes through the whole catalogue only when fewer than ``n`` kept movies are
    left unrated (the other movies rank after every kept one). ``score``: the SVD's estimate.
    EASE scores from the ``rated_*`` pairs; ``seen``: the (users, movies) pairs kept out of
    the lists (default: the rated pairs; ``rank_users`` adds those rated without a value).
    """
    n_items = factors.n_items
    pop = popularity_feature(counts)
    kept_pos = lookup(factors.raw_iids, model.raw_iids)  # catalogue position of kept movies
    in_cat = np.flatnonzero(kept_pos >= 0)
    cols = kept_pos[in_cat]
    sub_of = np.full(n_items, -1, dtype=np.int64)
    sub_of[cols] = np.arange(cols.size)
    rated_e = model.rated_rows(users, rated_users, rated_movies)
    seen_users, seen_movies = (rated_users, rated_movies) if seen is None else seen
    row = lookup(users, np.asarray(seen_users, dtype=np.int64))
    col = lookup(factors.raw_iids, np.asarray(seen_movies, dtype=np.int64))
    keep = (row >= 0) & (col >= 0)
    rated = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.int8), (row[keep], col[keep])),
        shape=(users.size, n_items),
    )
    rated.sum_duplicates()
    k = min(n, n_items)
    # Dense blocks of users x catalogue keys stay ~130 MB on a 59K-movie catalogue.
    step = max(1, min(block_size, 2**24 // max(n_items, 1)))

    def block(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stop = min(start + step, users.size)
        scores = model.scores_of(rated_e[start:stop])
        lo, hi = rated.indptr[start], rated.indptr[stop]
        mask_rows = np.repeat(np.arange(stop - start), np.diff(rated.indptr[start : stop + 1]))
        mask_cols = rated.indices[lo:hi]
        keys = scores[:, in_cat].astype(np.float64)
        sub = sub_of[mask_cols]
        keys[mask_rows[sub >= 0], sub[sub >= 0]] = -np.inf
        k_sub = min(k, cols.size)
        idx = cols[top_k_indices(keys, k_sub, factors.raw_iids[cols])] if k_sub else None
        valid = (
            np.isfinite(np.take_along_axis(keys, sub_of[idx], axis=1))
            if k_sub
            else np.zeros((stop - start, 0), dtype=bool)
        )
        short = np.flatnonzero((~valid).any(axis=1) | (k_sub < k))
        if short.size:  # too few kept movies left: rank the whole catalogue for these rows
            full = model.catalogue_keys(scores[short], factors.raw_iids, pop)
            in_short = np.full(stop - start, -1)
            in_short[short] = np.arange(short.size)
            sel = in_short[mask_rows] >= 0
            full[in_short[mask_rows[sel]], mask_cols[sel]] = -np.inf
            full_idx = top_k_indices(full, k, factors.raw_iids)
            full_valid = np.isfinite(np.take_along_axis(full, full_idx, axis=1))
            if k_sub < k:
                idx = np.zeros((stop - start, k), dtype=np.int64)
                valid = np.zeros((stop - start, k), dtype=bool)
            idx[short], valid[short] = full_idx, full_valid
        rows, pos = np.nonzero(valid)
        return users[start:stop][rows], factors.raw_iids[idx[rows, pos]], pos.astype(np.int64) + 1

    # Blocks side by side: scipy's sparse x dense product runs on one core.
    parts = thread_map(block, range(0, users.size, step), n_threads)
    out_u, out_m, out_r = ([p[j] for p in parts] for j in range(3))
    user_ids = np.concatenate(out_u) if out_u else np.zeros(0, dtype=np.int64)
    movie_ids = np.concatenate(out_m) if out_m else np.zeros(0, dtype=np.int64)
    return pd.DataFrame(
        {
            "user_id": user_ids,
            "movie_id": movie_ids,
            "rank": np.concatenate(out_r) if out_r else np.zeros(0, dtype=np.int64),
            "score": score_pairs(factors, user_ids, movie_ids),
        }
    )


def ranking_metrics(
    recommended: pd.DataFrame, relevant: pd.DataFrame, k: int = 10
) -> dict[str, float]:
    """Mean precision@k, recall@k and NDCG@k over users with at least one relevant movie.

    ``recommended``: ``user_id, movie_id, rank`` (1 = best); ``relevant``: ``user_id,
    movie_id`` pairs (duplicates ignored). A user with relevant movies but no list scores 0.
    precision@k = hits / k; recall@k = hits / |relevant|; NDCG@k = DCG / ideal DCG with
    binary gains and discount 1 / log2(rank + 1).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rel = relevant[["user_id", "movie_id"]].drop_duplicates()
    if rel.empty:
        return {"precision": 0.0, "recall": 0.0, "ndcg": 0.0, "users": 0}
    n_rel = rel.groupby("user_id").size()
    top = recommended.loc[recommended["rank"] <= k, ["user_id", "movie_id", "rank"]]
    hits = top.merge(rel, on=["user_id", "movie_id"], how="inner")
    gains = 1.0 / np.log2(hits["rank"].to_numpy(dtype=np.float64) + 1.0)
    dcg = pd.Series(gains, index=hits["user_id"].to_numpy()).groupby(level=0).sum()
    n_hits = hits.groupby("user_id").size()
    dcg = dcg.reindex(n_rel.index, fill_value=0.0)
    n_hits = n_hits.reindex(n_rel.index, fill_value=0)
    discounts = np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1.0))
    ideal = discounts[np.minimum(n_rel.to_numpy(), k) - 1]
    return {
        "precision": float((n_hits / k).mean()),
        "recall": float((n_hits / n_rel).mean()),
        "ndcg": float((dcg.to_numpy() / ideal).mean()),
        "users": int(n_rel.size),
    }


def choose_policy(
    evaluate: Callable[[RankingPolicy], float],
    base: RankingPolicy,
    grid: Iterable[tuple[float, float]] = DEFAULT_GRID,
) -> tuple[RankingPolicy, list[dict]]:
    """The grid point with the best ``evaluate(policy)`` (NDCG on validation data).

    ``base`` supplies ``min_user_ratings``. Ties go to the earlier (simpler) grid point.
    Returns the chosen policy and every tried point with its value, for the metadata.
    """
    tried, best, best_value = [], None, -np.inf
    for taste, rating in grid:
        policy = replace(base, popularity_weight=1.0, taste_weight=taste, rating_weight=rating)
        value = float(evaluate(policy))
        tried.append({"taste_weight": taste, "rating_weight": rating, "ndcg": value})
        if value > best_value:
            best, best_value = policy, value
    if best is None:
        raise ValueError("empty grid")
    return best, tried
