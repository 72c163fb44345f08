"""`svd_hyperparameters`: the SVD's hyperparameters, searched on every run (or fixed).

Successive halving over a sampled grid, validated on ratings that every CV fold of
`cv_report` keeps in its training part (see `recsys_assets.ml.selection.search` for why the figures
stay honest). Each rung fans out its candidates as steps, like the CV folds: the
multiprocess executor fits them side by side and Celery spreads them over workers.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg

from recsys_assets.assets.config import TuningConfig
from recsys_assets.assets.evaluation_sample import sample_metadata
from recsys_assets.assets.metadata import markdown_table, peak_rss_mb
from recsys_assets.ml.arrays import unique
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets.ml.selection.sample import EvaluationSample, SampleSize
from recsys_assets.ml.selection.search import (
    SEARCHABLE,
    Candidate,
    SearchPlan,
    evaluate_rung,
    plan_fractions,
    sample_candidates,
    validation_split,
)
from recsys_assets.ml.selection.search_result import SearchResult, choose, params_of_manifest
from recsys_assets.resources.executor_layout import ExecutorLayout

# Rungs of the successive halving: fixed, because each is a stage of the graph.
N_RUNGS = 3


@dataclass(frozen=True)
class SearchStep:
    """What the plan hands every step: the plan itself, or None when tuning is fixed."""

    plan: SearchPlan | None
    fixed: SearchResult | None
    candidates_per_step: int
    n_jobs: int | None
    evaluated: SampleSize  # the ratings the search ran on (`evaluation_sample`)


@dataclass(frozen=True)
class RungTask:
    rung: int
    candidates: tuple[Candidate, ...]
    reuse: tuple[dict, ...] = ()  # earlier rows fitted on the same sample (not refitted)


@dg.op
def search_plan(
    context: dg.OpExecutionContext,
    config: TuningConfig,
    evaluation_sample: EvaluationSample,
    model_store: dg.ResourceParam[ArtifactStore],
    executor_layout: ExecutorLayout,
) -> SearchStep:
    """Seed and champion configurations, `n_iter` sampled ones, the validation split V."""
    seed_params = config.params()
    # Unset: one candidate per step under Celery, else all of a rung's in one step (0).
    per_step = config.candidates_per_step or (1 if executor_layout.spreads_steps() else 0)
    n_jobs = config.n_jobs or None
    if config.tuning == "fixed":
        context.log.info("tuning fixed: %s", seed_params)
        return SearchStep(
            None, SearchResult.fixed(seed_params), per_step, n_jobs, evaluation_sample.size
        )
    if config.eta < 2 or config.n_iter < 0:
        raise dg.Failure(f"eta must be >= 2 and n_iter >= 0, got {config.eta}, {config.n_iter}")
    champion = model_store.latest_manifest()
    champion_params = params_of_manifest(champion, seed_params)
    grid = {
        k: [int(v) if k in ("n_factors", "n_epochs") else float(v) for v in vs]
        for k, vs in config.param_grid.items()
    }
    try:
        candidates = sample_candidates(
            seed_params, grid, config.n_iter, seed_params.random_state, champion_params
        )
    except ValueError as exc:
        raise dg.Failure(f"param_grid: {exc}") from exc
    users = evaluation_sample.dataset.rating_arrays().users
    try:
        holdout = validation_split(
            users,
            config.validation_fraction,
            config.validation_min_user_ratings,
            seed_params.random_state,
        )
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    if holdout.size == 0:
        raise dg.Failure(
            "no user has enough ratings for a validation split "
            f"(validation_min_user_ratings={config.validation_min_user_ratings}); "
            "lower it or run with tuning='fixed'"
        )
    plan = SearchPlan(
        candidates=tuple(candidates),
        holdout=holdout,
        fractions=plan_fractions(
            users.size - holdout.size, config.eta, N_RUNGS, config.min_rung_ratings
        ),
        eta=config.eta,
        seed=seed_params.random_state,
        max_seconds=config.max_seconds,
        started=time.time(),
        space={
            "param_grid": grid,
            "n_iter": config.n_iter,
            "eta": config.eta,
            "validation_fraction": config.validation_fraction,
            "validation_min_user_ratings": config.validation_min_user_ratings,
        },
        champion_version=champion["version"] if champion_params is not None else None,
    )
    context.log.info(
        "search on %s: %d configurations (%s), %d validation ratings of %d users; rungs on "
        "%s of the users; budget %s",
        evaluation_sample.size.describe(),
        len(candidates),
        ", ".join(c.label for c in candidates),
        holdout.size,
        unique(users[holdout]).size,
        ", ".join(f"{f:.0%}" for f in plan.fractions),
        f"{config.max_seconds:g}s" if config.max_seconds else "none",
    )
    return SearchStep(plan, None, per_step, n_jobs, evaluation_sample.size)


def _rung_tasks(
    context: dg.OpExecutionContext, step: SearchStep, rung: int, previous: list[list[dict]]
) -> Iterator[dg.DynamicOutput[RungTask]]:
    if step.plan is None:  # fixed: nothing to evaluate
        return
    # previous: per earlier rung, its steps' row lists.
    rows = [row for rung_steps in previous for result in rung_steps for row in result]
    candidates = step.plan.survivors(rung, rows)
    reuse = step.plan.reusable(rung, candidates, rows)
    reused = {r["label"] for r in reuse}
    to_fit = [c for c in candidates if c.label not in reused]
    per_step = step.candidates_per_step or len(to_fit)
    context.log.info(
        "rung %d/%d: %s in steps of %d%s",
        rung + 1,
        N_RUNGS,
        ", ".join(c.label for c in to_fit) or "nothing to fit",
        per_step,
        f"; same sample as before for {', '.join(sorted(reused))}" if reused else "",
    )
    chunks = [tuple(to_fit[i : i + max(per_step, 1)]) for i in range(0, len(to_fit), per_step or 1)]
    if reuse:
        # Rows fitted on this very sample in an earlier rung: one step copies them all.
        chunks.append(tuple(c for c in candidates if c.label in reused))
    for chunk in chunks:
        labels = {c.label for c in chunk}
        mine = tuple(r for r in reuse if r["label"] in labels)
        key = f"rung{rung + 1}_" + "_".join(c.label for c in chunk)
        yield dg.DynamicOutput(RungTask(rung, chunk, mine), mapping_key=key)


@dg.op(out=dg.DynamicOut(RungTask))
def search_rung_1(context: dg.OpExecutionContext, step: SearchStep):
    """Every candidate, on the smallest sample of users."""
    yield from _rung_tasks(context, step, 0, [])


@dg.op(out=dg.DynamicOut(RungTask))
def search_rung_2(context: dg.OpExecutionContext, step: SearchStep, rung_1: list):
    """The best 1/eta of rung 1's sampled candidates, on more users."""
    yield from _rung_tasks(context, step, 1, [rung_1])


@dg.op(out=dg.DynamicOut(RungTask))
def search_rung_3(context: dg.OpExecutionContext, step: SearchStep, rung_1: list, rung_2: list):
    """The best of rung 2, the seed's and the champion's configurations, on every user of
    the evaluation sample."""
    yield from _rung_tasks(context, step, 2, [rung_1, rung_2])


@dg.op
def search_fit(
    context: dg.OpExecutionContext,
    task: RungTask,
    step: SearchStep,
    evaluation_sample: EvaluationSample,
) -> list[dict]:
    """Fit this step's candidates on the rung's sample and score them on its share of V."""
    assert step.plan is not None
    start = time.perf_counter()
    rows = evaluate_rung(
        evaluation_sample.dataset,
        step.plan,
        task.rung,
        task.candidates,
        n_jobs=step.n_jobs,
        log=context.log,
        reuse=task.reuse,
    )
    context.add_output_metadata(
        {
            "rung": task.rung + 1,
            "candidates": ", ".join(c.label for c in task.candidates),
            "seconds": time.perf_counter() - start,
            "peak_rss_mb": peak_rss_mb(),
            **{f"{r['label']}_rmse": float(r["rmse"]) for r in rows if not r["skipped"]},
        }
    )
    return rows


_TABLE_COLUMNS = ["rung", "label", *SEARCHABLE, "fraction", "rmse", "fit_seconds", "n_train"]


@dg.op
def search_summary(
    context: dg.OpExecutionContext,
    step: SearchStep,
    rung_1: list,
    rung_2: list,
    rung_3: list,
) -> dg.Output[SearchResult]:
    """The configuration with the best validation RMSE on every user of the evaluation
    sample, and the search table."""
    if step.plan is None:
        assert step.fixed is not None
        result = step.fixed
        context.log.info("tuning fixed: %s", result.params)
        return dg.Output(
            result,
            metadata={
                "tuning": "fixed",
                **{k: float(getattr(result.params, k)) for k in SEARCHABLE},
                **sample_metadata(step.evaluated),
                "hyperparameters": dg.MetadataValue.json(result.params.as_dict()),
            },
        )
    rows = [row for rung in (rung_1, rung_2, rung_3) for result in rung for row in result]
    result = choose(step.plan, rows)
    record = result.record
    table = result.table.copy()
    table["rung"] = table["rung"] + 1
    table["fraction"] = table["fraction"].map(lambda f: f"{f:.0%}")
    table.loc[table["skipped"], "rmse"] = float("nan")
    shown = table[_TABLE_COLUMNS].rename(
        columns={"rmse": "validation RMSE", "fraction": "users", "n_train": "train ratings"}
    )
    seed_rmse = record["seed_validation_rmse"]
    context.log.info(
        "search chose %s (%s): validation RMSE %.4f vs the seed's %.4f; %d fits in %.1fs",
        record["chosen_label"],
        ", ".join(f"{k}={record['chosen'][k]}" for k in SEARCHABLE),
        record["chosen_validation_rmse"],
        seed_rmse,
        record["fits"],
        time.time() - step.plan.started,
    )
    champion = record["champion_validation_rmse"]
    return dg.Output(
        result,
        metadata={
            "tuning": "search",
            **{k: float(record["chosen"][k]) for k in SEARCHABLE},
            "chosen": record["chosen_label"],
            "validation_rmse": record["chosen_validation_rmse"],
            "seed_validation_rmse": seed_rmse,
            **({"champion_validation_rmse": champion} if champion is not None else {}),
            "improvement_over_seed": seed_rmse - record["chosen_validation_rmse"],
            "validation_ratings": record["validation_ratings"],
            "configurations": record["configurations_evaluated"],
            "fits": record["fits"],
            "fit_seconds": record["fit_seconds"],
            "search_seconds": time.time() - step.plan.started,
            **sample_metadata(step.evaluated),
            "search": dg.MetadataValue.md(markdown_table(shown)),
            "hyperparameters": dg.MetadataValue.json(result.params.as_dict()),
        },
    )


_FITS = [search_fit.alias(f"search_fit_{r + 1}") for r in range(N_RUNGS)]


@dg.config_mapping
def _search_config(config: TuningConfig) -> dict:
    # Users configure the asset (`ops.svd_hyperparameters.config`); the plan op holds it.
    return {"search_plan": {"config": config.model_dump()}}


@dg.graph_asset(group_name="training", config=_search_config)
def svd_hyperparameters(evaluation_sample: EvaluationSample) -> SearchResult:
    """The SVD's hyperparameters for this run: searched (successive halving) or fixed.

    Search, on `evaluation_sample` (every rating up to the evaluation budget): the seed's
    configuration, the champion's and `n_iter` sampled from `param_grid` are fitted on the
    ratings outside a seeded validation set V and scored on V, over three rungs on growing
    shares of its users (the best 1/eta go on; seed and champion always run on all of them).
    The best on all of them is chosen. `cv_report` keeps V in the training part
    of every fold, so the configuration is never chosen on a reported test fold; `svd_model`
    fits it on every rating. Metadata: the search table, the chosen values, validation RMSEs.
    """
    step = search_plan(evaluation_sample)

    def fit(rung: int, tasks):  # noqa: ANN001 - a Dagster dynamic output handle
        return tasks.map(lambda task: _FITS[rung](task, step, evaluation_sample)).collect()

    rung_1 = fit(0, search_rung_1(step))
    rung_2 = fit(1, search_rung_2(step, rung_1))
    rung_3 = fit(2, search_rung_3(step, rung_1, rung_2))
    return search_summary(step, rung_1, rung_2, rung_3)
