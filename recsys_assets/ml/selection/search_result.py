"""The outcome of the hyperparameter search: the chosen configuration, the search table and
what the manifest records about it (`choose`), and a stored model's configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from recsys_assets.ml.factors import SVDFactors
from recsys_assets.ml.selection.search import CHAMPION, FACTORS, SEARCHABLE, SEED, SearchPlan
from recsys_assets.ml.training import SVDParams

__all__ = ["SearchResult", "choose", "params_of_manifest"]


@dataclass(frozen=True)
class SearchResult:
    """The chosen hyperparameters and how they were chosen: one source for CV and the fit."""

    params: SVDParams
    mode: str  # "search" or "fixed"
    holdout: np.ndarray  # V (empty when fixed): in every CV fold's training part
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    record: dict = field(default_factory=dict)  # the manifest's `hyperparameter_search`
    # The chosen configuration fitted on every rating but V (None when fixed): what the
    # shipped list is chosen with, on V (`ml.selection.list_choice.choose_on_holdout`).
    factors: SVDFactors | None = None

    @classmethod
    def fixed(cls, params: SVDParams) -> SearchResult:
        record = {"mode": "fixed", **_chosen(params)}
        return cls(params, "fixed", np.zeros(0, dtype=np.int64), record=record)


def _chosen(params: SVDParams) -> dict:
    return {"chosen": {k: getattr(params, k) for k in SEARCHABLE}}


def choose(plan: SearchPlan, rows: Sequence[dict]) -> SearchResult:
    """The configuration with the lowest validation RMSE at full size (ties: the earlier, so
    the seed's wins a tie)."""
    table = pd.DataFrame([{k: v for k, v in r.items() if k != FACTORS} for r in rows])
    table = table.sort_values(["rung", "order"]).reset_index(drop=True)
    last = plan.n_rungs - 1
    full = table[(table["rung"] == last) & ~table["skipped"]]
    if full.empty:  # pragma: no cover - the seed always runs at full size
        raise ValueError("no configuration was evaluated at full size")
    best = full.sort_values(["rmse", "order"]).iloc[0]
    by_label = {c.label: c for c in plan.candidates}
    params = by_label[best["label"]].params

    def full_rmse(label: str) -> float | None:
        hit = full[full["label"] == label]
        return float(hit["rmse"].iloc[0]) if not hit.empty else None

    champion_rmse = full_rmse(CHAMPION)
    if champion_rmse is None and plan.champion_version is not None:
        # The champion's configuration equals the seed's: same candidate, same figure.
        champion_rmse = full_rmse(SEED)
    record = {
        "mode": "search",
        **_chosen(params),
        "chosen_label": str(best["label"]),
        "chosen_validation_rmse": float(best["rmse"]),
        "seed_validation_rmse": full_rmse(SEED),
        "seed": {k: getattr(plan.candidates[0].params, k) for k in SEARCHABLE},
        "champion_version": plan.champion_version,
        "champion_validation_rmse": champion_rmse,
        "space": plan.space,
        "budget": {
            "n_iter": sum(1 for c in plan.candidates if not c.mandatory),
            "max_seconds": plan.max_seconds,
            "eta": plan.eta,
            "rung_fractions": list(plan.fractions),
        },
        "validation_ratings": int(plan.holdout.size),
        "configurations_evaluated": int(table.loc[~table["skipped"], "label"].nunique()),
        "fits": int((~table["skipped"] & ~table["reused"]).sum()),
        "fit_seconds": float(table.loc[~table["reused"], "fit_seconds"].sum()),
    }
    factors = next(
        (r.get(FACTORS) for r in rows if r["rung"] == last and r["label"] == best["label"]), None
    )
    return SearchResult(params, "search", plan.holdout, table, record, factors)


def params_of_manifest(manifest: Mapping | None, base: SVDParams) -> SVDParams | None:
    """`base` with the searched hyperparameters a stored model was fitted with (None if its
    manifest records none). The rest (random_state, engine) stays this run's."""
    hyper = (manifest or {}).get("hyperparameters")
    if not isinstance(hyper, Mapping) or not all(k in hyper for k in SEARCHABLE):
        return None
    types = {k: type(getattr(base, k)) for k in SEARCHABLE}
    return replace(base, **{k: types[k](hyper[k]) for k in SEARCHABLE})
