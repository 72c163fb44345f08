"""The enumerations the run config, the training code and the CLI share, declared once.

Plain Python with no imports of the project's heavy modules, so the `recsys` parser can offer
them as choices without loading Dagster or the model code.
"""

from __future__ import annotations

from typing import Literal, get_args

# How `svd_hyperparameters` picks the SVD's hyperparameters: a search, or the seed's as given.
Tuning = Literal["search", "fixed"]
TUNING_MODES: tuple[Tuning, ...] = get_args(Tuning)

# How an SVD is fitted: "compiled" (ml/svd_sgd.py, numba) or "surprise" (`SVD.fit` itself).
# Both give the same model bit for bit; "surprise" is there to check that in a run.
Engine = Literal["compiled", "surprise"]
ENGINES: tuple[Engine, ...] = get_args(Engine)
