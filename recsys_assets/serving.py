"""Online serving of the champion model: ``predict`` and ``recommend`` for one user at a time.

    from recsys_assets.serving import Recommender
    rec = Recommender()                  # the store under RECSYS_HOME (signing key from env)
    rec.predict(196, 242)                # == champion.predict(196, 242).est
    rec.recommend(196, n=10)             # [Recommendation(movie_id, score, source), ...]

The champion is loaded once (verified: HMAC signature when a key is configured, then size and
SHA-256, before unpickling) and cached; calls check ``latest.json`` (a ``stat`` on a local
store) at most every ``check_interval`` seconds (1 s by default; 0 = every call) and reload
when it changed, so a promotion or rollback is picked up without a restart. Ranking is the
same as ``user_predictions`` (the key builders of ``ml.ranking.keys``): the champion's shipped
list (EASE or the SVD blend) for users with enough training ratings, the most-popular list for
the others and for users the model never saw. The model knows only the ratings it was trained
on, and this module reads no database: movies a user rated without a value (never trained on)
or rated since go in ``exclude`` (``recsys recommend`` reads the former from the ratings
database).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from recsys_assets.ml.arrays import lookup
from recsys_assets.ml.artifacts import (
    ArtifactIntegrityError,
    ArtifactStore,
)
from recsys_assets.ml.ease import NOT_KEPT_FLOOR
from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.model_bundle import bundle_of
from recsys_assets.ml.ranking.keys import PopularOrder, blend_keys, popularity_feature, unit_rows
from recsys_assets.ml.ranking.policy import SOURCE_EASE, SOURCE_POPULAR, SOURCE_SVD
from recsys_assets.ml.stripped_svd import PredictionTrainset

__all__ = ["Recommendation", "Recommender"]


@dataclass(frozen=True)
class Recommendation:
    movie_id: int
    score: float  # the SVD's predicted rating, clipped to the rating scale
    source: str  # 'ease' (ranking model), 'svd' (the SVD blend) or 'popular' (fallback)


class _Champion:
    """Everything one request needs, precomputed from the loaded model."""

    def __init__(self, model: object, manifest: dict) -> None:
        self.version: str = manifest["version"]
        self.manifest = manifest
        try:
            bundle = bundle_of(model, manifest)
        except ValueError as exc:
            raise ArtifactIntegrityError(f"model {self.version}: {exc}") from exc
        self.policy, self.ease = bundle.policy, bundle.ease
        f = SVDFactors.from_svd(bundle.svd)
        self.f = f
        ts = bundle.svd.trainset
        if not isinstance(ts, PredictionTrainset):
            # Models saved before 2026-11-27 kept Surprise's full Trainset.
            raise ArtifactIntegrityError(
                f"model {self.version} was saved in a format this version cannot serve "
                f"(its trainset is a {type(ts).__name__}); retrain it with `recsys run`"
            )
        self.user_index = {int(r): i for i, r in enumerate(f.raw_uids.tolist())}
        self.item_index = {int(r): i for i, r in enumerate(f.raw_iids.tolist())}
        self.indptr, self.items = np.asarray(ts.user_indptr), np.asarray(ts.user_items)
        self.counts = np.asarray(ts.item_counts, dtype=np.float64)
        self.popularity = popularity_feature(self.counts)
        self.qi_t = np.ascontiguousarray(f.qi.T)
        self.item_unit_t = np.ascontiguousarray(unit_rows(np.asarray(f.qi, dtype=np.float64)).T)
        # The fallback list for cold users (unrated filtering per user).
        self.popular = PopularOrder.of(f.raw_iids, self.counts)
        self.item_base = f.global_mean + f.bi  # what predict gives a user the model never saw
        self.bu, self.bi = f.bu.tolist(), f.bi.tolist()  # Python floats: cheaper per scalar
        if self.ease is not None:
            # EASE position of each catalogue movie (-1: not kept); B's columns reordered once
            # to the catalogue's kept movies, and the keys of the movies EASE does not rank
            # (`EASEModel.catalogue_keys`).
            self.ease_pos = lookup(self.ease.raw_iids, f.raw_iids)
            self.ease_inside = np.flatnonzero(self.ease_pos >= 0)
            self.all_kept = self.ease_inside.size == f.n_items
            self.ease_weights = np.ascontiguousarray(
                self.ease.weights[:, self.ease_pos[self.ease_inside]]
            )
            self.not_kept_keys = NOT_KEPT_FLOOR + self.popularity

    def estimates(self, inner_u: int | None) -> np.ndarray:
        """Unclipped estimates for every movie, in ``SVD.estimate``'s association order."""
        f = self.f
        if inner_u is None:
            return self.item_base
        est = (f.global_mean + f.bu[inner_u]) + f.bi
        est += f.pu[inner_u] @ self.qi_t
        return est

    def predict(self, user_id: int, movie_id: int) -> float:
        f = self.f
        u = self.user_index.get(int(user_id))
        i = self.item_index.get(int(movie_id))
        est = f.global_mean  # same terms, same order as SVD.estimate
        if u is not None:
            est += self.bu[u]
        if i is not None:
            est += self.bi[i]
        if u is not None and i is not None:
            est += float(np.dot(f.qi[i], f.pu[u]))
        return min(f.upper, max(f.lower, est))

    def recommend(
        self, user_id: int, n: int, exclude: tuple[int, ...] = ()
    ) -> list[Recommendation]:
        f = self.f
        u = self.user_index.get(int(user_id))
        rated = self.items[self.indptr[u] : self.indptr[u + 1]] if u is not None else None
        warm = u is not None and rated.size >= self.policy.min_user_ratings
        # Further movies kept off the list only (e.g. rated without a value: not trained on).
        skip = np.array(
            [i for i in (self.item_index.get(int(m)) for m in exclude) if i is not None],
            dtype=np.int64,
        )
        # EASE ranks warm users without the SVD: its estimates only for the chosen movies.
        est = self.estimates(u) if not warm or self.ease is None else None
        if not warm:
            seen = skip if rated is None else np.concatenate([rated, skip])
            chosen = self.popular.first_unseen_of_one(seen, n)
            source = SOURCE_POPULAR
        else:
            if self.ease is not None:
                keys = self._ease_keys(rated)
                source = SOURCE_EASE
            else:
                keys = self._blend_keys(est, rated)
                source = SOURCE_SVD
            keys[rated] = -np.inf
            keys[skip] = -np.inf
            k = min(n, f.n_items - np.unique(np.concatenate([rated, skip])).size)
            if k <= 0:
                return []
            cand = np.argpartition(-keys, k - 1)[:k] if k < f.n_items else np.arange(f.n_items)
            if k < f.n_items and np.count_nonzero(keys >= keys[cand].min()) > k:
                # A tie straddles the cut (argpartition picks arbitrarily): rank exactly,
                # ties by movie id like user_predictions.
                cand = np.lexsort((f.raw_iids, -keys))[:k]
            chosen = cand[np.lexsort((f.raw_iids[cand], -keys[cand]))]
        if est is None:
            est_chosen = (f.global_mean + f.bu[u]) + f.bi[chosen]
            est_chosen += f.pu[u] @ self.qi_t[:, chosen]
        else:
            est_chosen = est[chosen]
        scores = np.clip(est_chosen, f.lower, f.upper)
        return [
            Recommendation(int(m), float(s), source)
            for m, s in zip(f.raw_iids[chosen].tolist(), scores.tolist(), strict=True)
        ]

    def _ease_keys(self, rated: np.ndarray) -> np.ndarray:
        """EASE keys over the catalogue, bit-equal to ``user_predictions``' sparse product.

        ``EASEModel.scores_of`` adds the user's rows of B one after another in ascending
        order; a sum over axis 0 of the same rows does the same float32 additions in the same
        order (tested equal for every user), without building a sparse row per request.
        """
        cols = np.unique(self.ease_pos[rated])
        scores = self.ease_weights[cols[cols >= 0]].sum(axis=0)
        if self.all_kept:
            return scores.astype(np.float64)
        keys = self.not_kept_keys.copy()
        keys[self.ease_inside] = scores
        return keys

    def _blend_keys(self, est: np.ndarray, rated: np.ndarray) -> np.ndarray:
        """The SVD blend's keys (``ranking.keys.blend_keys``) for a warm user."""
        cos = None
        if self.policy.taste_weight:
            taste = self.f.qi[rated].sum(axis=0)
            taste /= max(float(np.linalg.norm(taste)), 1e-12)
            cos = taste @ self.item_unit_t
        return blend_keys(self.policy, est, self.popularity, cos)


class Recommender:
    """The champion of a model store, cached and reloaded when ``latest`` changes."""

    def __init__(self, store: ArtifactStore | None = None, check_interval: float = 1.0) -> None:
        self._store = store if store is not None else ArtifactStore.from_env()
        self._lock = threading.Lock()
        self._stamp: object = None
        self._champion: _Champion | None = None
        self._check_interval = check_interval
        self._next_check = 0.0

    def _current(self) -> _Champion:
        champion = self._champion
        if champion is not None and time.monotonic() < self._next_check:
            return champion
        # Changes on every promotion or rollback (NoModelError while nothing is promoted).
        stamp = self._store.latest_stamp()
        self._next_check = time.monotonic() + self._check_interval
        if champion is not None and stamp == self._stamp:
            return champion
        with self._lock:
            if self._champion is None or stamp != self._stamp:
                model, manifest = self._store.load_latest()  # verified before unpickling
                self._champion = _Champion(model, manifest)
                self._stamp = stamp
            return self._champion

    @property
    def version(self) -> str:
        """Version of the champion currently served."""
        return self._current().version

    @property
    def manifest(self) -> dict:
        return self._current().manifest

    def predict(self, user_id: int, movie_id: int) -> float:
        """The champion's predicted rating, equal to ``model.predict(user_id, movie_id).est``."""
        return self._current().predict(user_id, movie_id)

    def recommend(
        self, user_id: int, n: int = 10, exclude: tuple[int, ...] = ()
    ) -> list[Recommendation]:
        """Top ``n`` movies the user has not rated (nor any movie id in ``exclude``), in the
        order ``user_predictions`` ships them; most-popular for unknown/cold users.

        ``user_predictions`` leaves out the movies the user rated without a value: pass them in
        ``exclude`` (``RatingsStore.read_unrated_pairs([user])``) for the same list."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return self._current().recommend(user_id, n, tuple(exclude))
