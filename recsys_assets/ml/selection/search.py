"""Hyperparameter search for the SVD: successive halving on a validation split of the ratings.

How the numbers stay honest. A seeded validation set V (`validation_split`: a fraction of
each user's ratings, users with enough ratings) is set aside first. Every candidate is fitted
on the ratings not in V and scored on V; the configuration is chosen on V only. The CV that
`cv_report` reports then splits the ratings *not* in V into its k folds and adds V to every
fold's training part (`folds.fold_split`): no reported test fold is ever scored by the
search. (The search's models do see the test folds' ratings as training data, as the shipped
model does; what is never used is an error measured on them.)

Successive halving (`SearchPlan`): rung r fits the candidates still in the race on a seeded
sample of users (`fraction` of them, the same sample for every candidate of the rung) and
keeps the best ``1/eta``; the last rung is full size. The seed's configuration and the
current champion's (when there is one) are not sampled: they are evaluated at every rung and
always at full size, so the manifest can record the seed's validation RMSE and the promotion
gate can compare the challenger with the champion's configuration on today's data.

Names follow `surprise.model_selection` where they fit: `param_grid` (as for `GridSearchCV`)
and `n_iter` configurations sampled from it (as `RandomizedSearchCV`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import product

import numpy as np

from recsys_assets.ml.arrays import Ratings, unique
from recsys_assets.ml.datasets import CompactDataset, CompactTrainset
from recsys_assets.ml.factors import SVDFactors, score_pairs
from recsys_assets.ml.svd_sgd import sgd_kernel
from recsys_assets.ml.training import SVDParams, fit_svd
from recsys_assets.ml.workers import cpu_count, fork_map, runs_inline

# What may be searched (SVDParams fields). Per-parameter rates are left out: lr_all/reg_all
# set all four, and the grid would grow fourfold per parameter.
SEARCHABLE = ("n_factors", "n_epochs", "lr_all", "reg_all")

# MovieLens-like defaults (literature: more epochs, lr 0.005-0.01, reg 0.05-0.1 and fewer
# factors often do better than the seed's on small data); the seed's own values stay a
# candidate of their own. 16 points, all tried by default (`n_iter`): successive halving keeps
# that at about four seed fits. The largest (100 factors, 40 epochs) costs two seed fits.
DEFAULT_PARAM_GRID: dict[str, tuple[float | int, ...]] = {
    "n_factors": (20, 100),
    "n_epochs": (20, 40),
    "lr_all": (0.005, 0.01),
    "reg_all": (0.05, 0.1),
}
SEED = "seed"
CHAMPION = "champion"
FACTORS = "factors"  # a row's fitted factors (full-size rung only); never in the table


@dataclass(frozen=True)
class Candidate:
    """One configuration in the race: `label` names it in the table (seed, champion, c1...)."""

    label: str
    params: SVDParams

    @property
    def mandatory(self) -> bool:
        """The seed's and the champion's configurations always reach the full-size rung."""
        return self.label in (SEED, CHAMPION)

    def describe(self) -> str:
        p = self.params
        return " ".join(f"{k}={getattr(p, k)}" for k in SEARCHABLE)


def sample_candidates(
    seed_params: SVDParams,
    param_grid: Mapping[str, Sequence[float | int]],
    n_iter: int,
    random_state: int,
    champion: SVDParams | None = None,
) -> list[Candidate]:
    """The seed's configuration, the champion's (if any, and different) and `n_iter` distinct
    grid points drawn without replacement (seeded), none equal to those two."""
    unknown = set(param_grid) - set(SEARCHABLE)
    if unknown:
        raise ValueError(f"param_grid keys {sorted(unknown)} are not searchable {SEARCHABLE}")
    if any(len(values) == 0 for values in param_grid.values()):
        raise ValueError("every param_grid entry needs at least one value")
    out = [Candidate(SEED, seed_params)]
    if champion is not None and champion != seed_params:
        out.append(Candidate(CHAMPION, champion))
    taken = {c.params for c in out}
    names = list(param_grid)
    points = [
        replace(seed_params, **dict(zip(names, values, strict=True)))
        for values in product(*(param_grid[n] for n in names))
    ]
    points = [p for p in dict.fromkeys(points) if p not in taken]
    order = np.random.RandomState(random_state).permutation(len(points))
    for k, i in enumerate(order[: max(0, n_iter)], start=1):
        out.append(Candidate(f"c{k}", points[i]))
    return out


def validation_split(
    users: np.ndarray, fraction: float, min_user_ratings: int, seed: int
) -> np.ndarray:
    """Sorted indices of V: a seeded `fraction` (at least one) of the ratings of every user with
    at least `min_user_ratings` ratings. Users with fewer keep all theirs for training."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
    n = users.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.random.RandomState(seed).permutation(n)
    # Group by user, keeping the random order within each user: the first k are held out.
    grouped = order[np.argsort(users[order], kind="stable")]
    sorted_users = users[grouped]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, n])
    held = np.where(counts >= max(min_user_ratings, 2), np.maximum(1, counts * fraction), 0)
    rank = np.arange(n) - np.repeat(starts, counts)
    return np.sort(grouped[rank < np.repeat(held.astype(np.int64), counts)])


def user_sample(users: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the ratings of a seeded `fraction` of the distinct users (all at 1).

    The first users of one seeded permutation: a smaller fraction's users are among a larger
    one's, and equal fractions give the same sample."""
    if fraction >= 1.0:
        return np.ones(users.size, dtype=bool)
    distinct = unique(users)
    k = max(1, math.ceil(distinct.size * fraction))
    chosen = np.random.RandomState(seed).permutation(distinct)[:k]
    return np.isin(users, chosen)


@dataclass(frozen=True)
class SearchPlan:
    """Everything the rung steps need, decided once by the plan step (seeded)."""

    candidates: tuple[Candidate, ...]
    holdout: np.ndarray  # V: rating indices the search validates on
    fractions: tuple[float, ...]  # user fraction per rung; the last is 1.0
    eta: int
    seed: int
    max_seconds: float  # 0: no time limit
    started: float  # time.time() when the plan was made (the seconds budget counts from it)
    space: dict = field(default_factory=dict)  # what the manifest records
    champion_version: str | None = None

    @property
    def n_rungs(self) -> int:
        return len(self.fractions)

    def over_time(self) -> bool:
        return bool(self.max_seconds) and time.time() - self.started >= self.max_seconds

    def survivors(self, rung: int, rows: Sequence[dict]) -> list[Candidate]:
        """Who runs in `rung` given every row so far: the best ``ceil(n / eta**rung)`` sampled
        candidates of the previous rung (only the best once over time), and in the first and
        the full-size rung the seed's and the champion's configurations."""
        sampled = [c for c in self.candidates if not c.mandatory]
        mandatory = [c for c in self.candidates if c.mandatory]
        # Mandatory ones skip the middle rungs: they reach full size anyway.
        ends = mandatory if rung in (0, self.n_rungs - 1) else []
        if rung == 0:
            return ends + ([] if self.over_time() else sampled)
        previous = [r for r in rows if r["rung"] == rung - 1 and r["label"] not in (SEED, CHAMPION)]
        previous = [r for r in previous if not r["skipped"]]
        previous.sort(key=lambda r: (r["rmse"], r["order"]))
        keep = 1 if self.over_time() else math.ceil(len(sampled) / self.eta**rung)
        chosen = {r["label"] for r in previous[:keep]}
        return ends + [c for c in sampled if c.label in chosen]

    def reusable(self, rung: int, candidates: Sequence[Candidate], rows: Sequence[dict]) -> list:
        """Earlier rows of these candidates fitted on the same sample (same fraction: the same
        users, see `user_sample`), to copy instead of refitting: on small data where every
        rung is full size, each configuration is fitted once."""
        labels = {c.label for c in candidates}
        same = {
            r["label"]: r
            for r in sorted(rows, key=lambda r: r["rung"])
            if r["label"] in labels
            and not r["skipped"]
            and r["rung"] < rung
            and self.fractions[r["rung"]] == self.fractions[rung]
        }
        return list(same.values())


def plan_fractions(
    n_train: int, eta: int, n_rungs: int, min_rung_ratings: int
) -> tuple[float, ...]:
    """User fractions ``eta**-(n_rungs-1) .. 1``, raised so a rung has `min_rung_ratings`.

    A rung that would fit on less than twice its predecessor's users keeps the predecessor's
    sample instead: its candidates' rows are then reused, not refitted (`reusable`)."""
    floor = min(1.0, min_rung_ratings / max(n_train, 1))
    out: list[float] = []
    for r in range(n_rungs):
        fraction = 1.0 if r == n_rungs - 1 else max(float(eta) ** -(n_rungs - 1 - r), floor)
        if out and fraction < min(1.0, 2 * out[-1]):
            fraction = out[-1]
        out.append(fraction)
    return tuple(out)


@dataclass(frozen=True)
class _Rung:
    """What the forked evaluation workers share (`workers.fork_map`), never pickled."""

    trainset: CompactTrainset | None  # built once per rung step, before forking (None: no fits)
    val: Ratings
    plan: SearchPlan
    keep_factors: bool  # full-size rung: keep each fit's factors


def rung_data(
    dataset: CompactDataset, holdout: np.ndarray, fraction: float, seed: int
) -> tuple[Ratings, np.ndarray, np.ndarray]:
    """Every rating as arrays, and the rung's training and validation indices."""
    everything = dataset.rating_arrays()
    in_v = np.zeros(everything.ratings.size, dtype=bool)
    in_v[holdout] = True
    sample = user_sample(everything.users, fraction, seed)
    return everything, np.flatnonzero(sample & ~in_v), np.flatnonzero(sample & in_v)


def _evaluate(run: _Rung, candidate: Candidate) -> dict | None:
    """The candidate's validation figures; None (skipped) when a sampled candidate would
    start after the seconds budget ran out."""
    if not candidate.mandatory and run.plan.over_time():
        return None
    trainset = run.trainset
    t0 = time.perf_counter()
    model = fit_svd(trainset, candidate.params)
    fit = time.perf_counter() - t0
    factors = SVDFactors.from_svd(model)
    # Validation users/movies the sampled trainset never saw are scored as SVD.predict would.
    err = score_pairs(factors, run.val.users, run.val.movies) - run.val.ratings
    return {
        "rmse": float(np.sqrt(np.mean(err**2))) if err.size else float("nan"),
        "mae": float(np.mean(np.abs(err))) if err.size else float("nan"),
        "fit_seconds": fit,
        "n_train": int(trainset.n_ratings),
        "n_validation": int(err.size),
        # Full-size fits (every rating but V): the chosen one's factors pick the shipped list
        # on V (`SearchResult.factors`), so CV needs no inner fits of its own.
        FACTORS: factors if run.keep_factors else None,
    }


_SKIPPED = {
    "rmse": float("nan"),
    "mae": float("nan"),
    "fit_seconds": 0.0,
    "n_train": 0,
    "n_validation": 0,
    FACTORS: None,
}


def _table_row(plan: SearchPlan, rung: int, candidate: Candidate, result: dict | None) -> dict:
    """The search table's row of a candidate in a rung (`result` None: skipped)."""
    return {
        "rung": rung,
        "label": candidate.label,
        "order": [c.label for c in plan.candidates].index(candidate.label),
        "fraction": plan.fractions[rung],
        **{k: getattr(candidate.params, k) for k in SEARCHABLE},
        **(result if result is not None else _SKIPPED),
        "skipped": result is None,
        "reused": False,
    }


def _log_row(log: logging.Logger, plan: SearchPlan, candidate: Candidate, row: dict) -> None:
    if row["skipped"]:
        log.info("search rung %d: %s skipped, budget spent", row["rung"] + 1, candidate.label)
        return
    log.info(
        "search rung %d/%d (%.0f%% of users) %s [%s]: validation RMSE %.4f, fit %.2fs",
        row["rung"] + 1,
        plan.n_rungs,
        100 * row["fraction"],
        candidate.label,
        candidate.describe(),
        row["rmse"],
        row["fit_seconds"],
    )


def evaluate_rung(
    dataset: CompactDataset,
    plan: SearchPlan,
    rung: int,
    candidates: Sequence[Candidate],
    n_jobs: int | None = None,
    log: logging.Logger | None = None,
    reuse: Sequence[dict] = (),
) -> list[dict]:
    """Fit each candidate on the rung's training ratings and score it on the rung's share of V.

    Runs in `n_jobs` forked workers (each fit is single-threaded), each candidate logged as
    its result arrives. A sampled candidate that would start after the seconds budget ran out
    is skipped (row with `skipped=True`); the seed's and champion's configurations always
    run. `reuse`: earlier rows of candidates already fitted on this very sample
    (`SearchPlan.reusable`), copied instead of refitted.
    """
    done = [{**r, "rung": rung, "reused": True} for r in reuse]
    reused = {r["label"] for r in done}
    todo = [c for c in candidates if c.label not in reused]
    # Budget already spent: the sampled candidates are skipped without a fit (or a fork).
    late = [c for c in todo if not c.mandatory] if plan.over_time() else []
    todo = [c for c in todo if c not in late]
    n_jobs = n_jobs or min(len(todo), cpu_count())
    if any(c.params.engine == "compiled" for c in todo):
        sgd_kernel()  # compiled (or loaded) once here, not once per forked worker
    if not runs_inline(n_jobs, len(todo)):
        # Longest first (epochs x factors) packs the workers better.
        todo.sort(key=lambda c: -c.params.n_epochs * (c.params.n_factors + 10))
    everything, train_idx, val_idx = rung_data(
        dataset, plan.holdout, plan.fractions[rung], plan.seed
    )
    shared = _Rung(
        dataset.trainset_of(train_idx) if todo else None,
        everything.take(val_idx),
        plan,
        plan.fractions[rung] >= 1.0,
    )
    rows = []

    def progress(candidate: Candidate, result: dict | None) -> None:
        rows.append(_table_row(plan, rung, candidate, result))
        if log is not None:
            _log_row(log, plan, candidate, rows[-1])

    fork_map(_evaluate, shared, todo, n_jobs, on_result=progress)
    for candidate in late:
        progress(candidate, None)
    return sorted([*rows, *done], key=lambda r: r["order"])
