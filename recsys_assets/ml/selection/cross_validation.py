"""Seeded k-fold cross-validation of the SVD (Surprise's KFold folds), with baselines, ranking
metrics and the list choice on the same folds; fits and evaluations run in forked workers."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_assets.ml.arrays import Ratings
from recsys_assets.ml.datasets import CompactDataset, CompactTrainset
from recsys_assets.ml.factors import SVDFactors, score_pairs
from recsys_assets.ml.ranking.policy import SOURCE_EASE, RankingPolicy
from recsys_assets.ml.selection import evaluation
from recsys_assets.ml.selection.folds import (
    fold_indices,
    fold_split,
    shared_inner_pairs,
    train_indices,
)
from recsys_assets.ml.selection.list_choice import (
    DEFAULT_EASE,
    EaseSettings,
    ListChoice,
    choose_lists,
)
from recsys_assets.ml.svd_sgd import sgd_kernel
from recsys_assets.ml.training import DEFAULT_MIN_USER_RATINGS, SVDParams, fit_svd
from recsys_assets.ml.workers import Workers, cpu_count, fork_workers, runs_inline

__all__ = ["CVSettings", "cross_validate_svd", "default_jobs"]


def _fold_row(
    fold: int, err: np.ndarray, fit: float, test: float, build: float, n_train: int
) -> dict:
    """A fold's error row from its held-out residuals (what `accuracy.rmse/mae` compute)."""
    return {
        "fold": fold,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "fit_time": fit,
        "test_time": test,
        "trainset_time": build,
        "n_train": n_train,
        "n_test": int(err.size),
    }


@dataclass(frozen=True)
class CVSettings:
    """How the folds are cut and what each fold reports (`CVConfig`'s figures)."""

    n_folds: int = 4
    seed: int = 42
    # Forked worker processes (None: one per task that can run side by side, at most the CPUs).
    n_jobs: int | None = None
    # Ranking metrics and list choice, with users below this many training ratings on the
    # popular list (cold start); None: rating error (RMSE/MAE) only.
    min_user_ratings: int | None = DEFAULT_MIN_USER_RATINGS
    # Ranking metrics and list choice on a seeded sample of this many users (None or 0: all).
    ranking_users: int | None = None
    # The EASE ranking model's validation grid (None: EASE is not evaluated).
    ease: EaseSettings | None = DEFAULT_EASE

    @property
    def ranking(self) -> bool:
        return self.min_user_ratings is not None


@dataclass(frozen=True)
class _CVRun:
    """What every CV task reads: forked workers inherit it (`workers.fork_workers`), never
    pickled: no serialisation, no re-import, copy-on-write memory."""

    dataset: CompactDataset
    indices: np.ndarray
    bounds: list[int]
    params: SVDParams
    settings: CVSettings
    # Every rating as arrays, built once in the parent rather than once per fold.
    everything: Ratings
    # Epoch progress of the fold fits, only when they run in this process (one-fold steps).
    log: logging.Logger | None = None
    # Every fold carries one choice made beforehand (`cross_validate_svd`'s `choice`).
    shared_choice: bool = False

    def trainset(self, index: np.ndarray) -> CompactTrainset:
        return self.dataset.trainset_of(index)


def _fit_fold(run: _CVRun, fold: int) -> tuple[dict, SVDFactors | None]:
    """Fit on all folds but `fold` and score its ratings; the factors for the ranking eval."""
    test_idx = fold_indices(run.indices, run.bounds, fold)
    t0 = time.perf_counter()
    trainset = run.trainset(train_indices(run.indices, run.bounds, [fold]))
    test = run.everything.take(test_idx)
    build_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = fit_svd(trainset, run.params, log=run.log)
    fit_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    factors = SVDFactors.from_svd(model)
    # Vectorized equivalent of `model.test(testset)` + accuracy.rmse/mae.
    err = score_pairs(factors, test.users, test.movies) - test.ratings
    test_time = time.perf_counter() - t0
    row = _fold_row(fold, err, fit_time, test_time, build_time, trainset.n_ratings)
    return row, (factors if run.settings.ranking else None)


def _select_shared(
    run: _CVRun, a: int, b: int, wanted: tuple[int, ...] | None = None
) -> tuple[dict[int, ListChoice], float]:
    """Blend weights, EASE λ and shipped list for folds a and b from inner models fitted on
    the other folds (`ml.selection.list_choice.choose_lists`).

    `wanted`: the folds whose weights are needed (a fold step of the Dagster fan-out that has
    only one of the pair fits the same inner model and validates on the other fold only).
    """
    settings = run.settings
    assert settings.min_user_ratings is not None
    t0 = time.perf_counter()
    inner_idx = train_indices(run.indices, run.bounds, [a, b])
    factors = SVDFactors.from_svd(fit_svd(run.trainset(inner_idx), run.params))
    inner = run.everything.take(inner_idx)
    base = RankingPolicy(min_user_ratings=settings.min_user_ratings)
    # Validated on a, the model picks b's weights; validated on b, a's (one ranking pass).
    wanted = (a, b) if wanted is None else wanted
    # Fold a's weights are validated on b and b's on a.
    on = [f for f in (a, b) if (b if f == a else a) in wanted]
    validations = [run.everything.take(fold_indices(run.indices, run.bounds, f)) for f in on]
    chosen = choose_lists(
        factors,
        inner,
        validations,
        base,
        settings.ease,
        max_users=settings.ranking_users,
        seed=settings.seed,
    )
    choices = {(b if f == a else a): choice for f, choice in zip(on, chosen, strict=True)}
    return choices, time.perf_counter() - t0


def _select_own(run: _CVRun, fold: int) -> tuple[dict[int, ListChoice], float]:
    """Blend weights, EASE λ and shipped list for `fold` from an inner split of its own
    training ratings (`evaluation.validation_split`: a quarter validates)."""
    settings = run.settings
    assert settings.min_user_ratings is not None
    t0 = time.perf_counter()
    train_idx = train_indices(run.indices, run.bounds, [fold])
    fit_idx, val_idx = evaluation.validation_split(train_idx.size, settings.seed + fold)
    factors = SVDFactors.from_svd(fit_svd(run.trainset(train_idx[fit_idx]), run.params))
    train = run.everything.take(train_idx)
    base = RankingPolicy(min_user_ratings=settings.min_user_ratings)
    (choice,) = choose_lists(
        factors,
        train.take(fit_idx),
        [train.take(val_idx)],
        base,
        settings.ease,
        max_users=settings.ranking_users,
        seed=settings.seed + fold,
    )
    return {fold: choice}, time.perf_counter() - t0


def _evaluate(run: _CVRun, fold: int, factors: SVDFactors, choice: ListChoice) -> dict:
    """Baselines and ranking metrics of `fold` (`evaluation.evaluate_factors`), with the EASE
    model fitted on the fold's training ratings (λ chosen on validation) and the shipped list:
    the one that ranked better on validation.

    With one choice made beforehand for every fold (on the search's V) that ships the blend,
    the folds fit no EASE: they measure what ships, and EASE's O(movies³) solve per fold is
    the largest cost of a fold at 10,000 movies. V's EASE figures stay in the row."""
    t0 = time.perf_counter()
    train = run.everything.take(train_indices(run.indices, run.bounds, [fold]))
    test = run.everything.take(fold_indices(run.indices, run.bounds, fold))
    settings, ease = run.settings, None
    validated = settings.ease is not None and choice.ease_lambda is not None
    if validated and (not run.shared_choice or choice.ranker == SOURCE_EASE):
        ease = settings.ease.fit(train.users, train.movies, choice.ease_lambda)
    row = evaluation.evaluate_factors(
        factors,
        train,
        test,
        choice.policy,
        max_users=settings.ranking_users,
        seed=settings.seed,
        ease=ease,
    )
    row["blend_validation_ndcg"] = choice.blend_ndcg
    if validated:
        row["ease_lambda"] = choice.ease_lambda
        row["ease_validation_ndcg"] = choice.ease_ndcg
    shipped = "ease" if choice.ranker == SOURCE_EASE else "blend"
    row["shipped_ease"] = float(shipped == "ease")
    for metric in ("precision", "recall", "ndcg"):
        row[f"shipped_{metric}"] = row[f"{shipped}_{metric}"]
    row["eval_time"] = time.perf_counter() - t0
    return row


def _run_tasks(
    pool: Workers,
    n_folds: int,
    ranking: bool,
    folds: Sequence[int] | None = None,
    choice: ListChoice | None = None,
) -> Iterator[dict]:
    """Schedule fits, weight selections and evaluations; yield each fold's row when complete.

    A fold's evaluation is submitted as soon as both its model and its weights are ready, so
    the workers stay busy with whatever is runnable. `folds`: a subset (a fan-out step's);
    its rows are those of the full run. `choice`: every fold's lists, chosen beforehand (no
    selection tasks).
    """
    folds = list(range(1, n_folds + 1) if folds is None else folds)
    pending: dict[Future, tuple[str, int]] = {}
    policies: dict[int, ListChoice] = {}
    select_time: dict[int, float] = {}
    if ranking and choice is not None:
        policies = dict.fromkeys(folds, choice)
        select_time = dict.fromkeys(folds, 0.0)
    elif ranking:
        # Weight selections first: each unlocks two evaluations, and long tasks first pack
        # the workers better.
        pairs = shared_inner_pairs(n_folds)
        for a, b in pairs:
            wanted = tuple(f for f in (a, b) if f in folds)
            if wanted:
                pending[pool.submit(_select_shared, a, b, wanted)] = ("select", a)
        for fold in sorted(set(folds) - {f for pair in pairs for f in pair}):
            pending[pool.submit(_select_own, fold)] = ("select", fold)
    for fold in folds:
        pending[pool.submit(_fit_fold, fold)] = ("fit", fold)
    rows: dict[int, dict] = {}
    factors: dict[int, SVDFactors] = {}
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            kind, fold = pending.pop(future)
            if kind == "fit":
                rows[fold], factors[fold] = future.result()
                if not ranking:
                    yield rows[fold]
            elif kind == "select":
                chosen, seconds = future.result()
                policies.update(chosen)
                select_time.update({f: seconds / len(chosen) for f in chosen})
            else:
                row = rows[fold] | future.result()
                # The row's eval_time includes its share of the weight selection.
                row["eval_time"] += select_time[fold]
                yield row
            ready = [f for f in factors if f in policies]
            for f in ready:
                pending[pool.submit(_evaluate, f, factors.pop(f), policies[f])] = ("eval", f)


def default_jobs(n_folds: int) -> int:
    return max(1, min(n_folds, cpu_count()))


def _log_row(log: logging.Logger, row: dict, n_folds: int, n_done: int) -> None:
    log.info(
        "cv fold %d/%d: rmse=%.4f mae=%.4f fit=%.2fs test=%.2fs (%d done)",
        row["fold"],
        n_folds,
        row["rmse"],
        row["mae"],
        row["fit_time"],
        row["test_time"],
        n_done,
    )
    if "blend_ndcg" in row:
        log.info(
            "cv fold %d/%d: NDCG@10 shipped=%.4f (%s) blend=%.4f ease=%.4f "
            "svd-only=%.4f most-popular=%.4f; baseline rmse=%.4f (eval %.2fs)",
            row["fold"],
            n_folds,
            row["shipped_ndcg"],
            "ease" if row["shipped_ease"] else "blend",
            row["blend_ndcg"],
            row.get("ease_ndcg", float("nan")),
            row["svd_ndcg"],
            row["popular_ndcg"],
            row["baseline_rmse"],
            row["eval_time"],
        )


def cross_validate_svd(
    dataset: CompactDataset,
    params: SVDParams,
    settings: CVSettings = CVSettings(),
    *,
    folds: Sequence[int] | None = None,
    holdout: np.ndarray | None = None,
    choice: ListChoice | None = None,
    log: logging.Logger | None = None,
) -> pd.DataFrame:
    """Seeded k-fold CV (the folds of Surprise's KFold); a row per fold: RMSE, MAE, times.

    Each SVD fit is single-threaded, so fits, blend-weight selections and evaluations run as
    tasks in `settings.n_jobs` forked worker processes. With ranking on
    (`settings.min_user_ratings`), each row also has `ml.selection.evaluation.evaluate_factors`'
    baselines and ranking metrics; the blend's weights come from inner models that never saw
    the fold (`shared_inner_pairs`, `_select_own`); with `settings.ease`, also EASE (λ chosen
    on validation) and the shipped list, the better of blend and EASE on validation
    (`ml.selection.list_choice`). Ranking uses a seeded sample of `settings.ranking_users`
    users (`evaluation.ranking_evals`); RMSE/MAE use every rating.

    `folds` (1-based) restricts the run to some of the folds, with the rows the full run
    would give them: the Dagster fan-out gives each step its share. A step holding one fold
    of a shared pair fits the pair's inner model itself.
    `holdout`: rating indices kept out of every test fold and in every fold's training part
    (the hyperparameter search's validation ratings, see `fold_split`).
    `choice`: blend weights, λ and shipped list already chosen on validation ratings outside
    every test fold (`list_choice.choose_on_holdout`): used by every fold, no inner fits.
    """
    n_folds = settings.n_folds
    # Before forking.
    indices, bounds = fold_split(len(dataset), n_folds, settings.seed, holdout)
    folds = list(range(1, n_folds + 1) if folds is None else folds)
    if not folds or min(folds) < 1 or max(folds) > n_folds:
        raise ValueError(f"folds must be a non-empty subset of 1..{n_folds}, got {folds}")
    # A lone fold with ranking still has two independent fits (its own and the inner one).
    n_parallel = max(len(folds), 2 if settings.ranking and choice is None else 1)
    n_jobs = default_jobs(n_parallel) if settings.n_jobs is None else settings.n_jobs
    if params.engine == "compiled":
        # Loaded (from the on-disk cache) once here, before forking: the workers inherit it.
        sgd_kernel()
    inline = runs_inline(n_jobs, n_parallel)
    run = _CVRun(
        dataset,
        indices,
        bounds,
        params,
        settings,
        dataset.rating_arrays(),
        log if inline and len(folds) == 1 else None,
        shared_choice=choice is not None,
    )
    rows = []
    with fork_workers(run, n_jobs, n_parallel) as pool:
        for row in _run_tasks(pool, n_folds, settings.ranking, folds, choice):
            rows.append(row)
            if log is not None:
                _log_row(log, row, n_folds, len(rows))
    return pd.DataFrame(rows).sort_values("fold").reset_index(drop=True)
