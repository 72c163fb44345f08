"""Data checks on `ratings_df`, in one step (`ratings_df_checks`); blocking, ERROR severity:
a bad ratings read never trains a model."""

import math
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from recsys_assets.assets.ratings import ratings_df, recorded_rating_scale
from recsys_assets.checks.results import ERROR, as_spec


class VolumeCheckConfig(dg.Config):
    """How far the number of ratings may fall versus the last successful run."""

    # 0.5: a read with less than half the previous ratings blocks training.
    max_drop_fraction: float = 0.5
    # How many past materializations to look through for the last successful run.
    lookback: int = 50


RATINGS_CHECKS = [
    dg.AssetCheckSpec(
        "ratings_not_empty",
        asset=ratings_df,
        blocking=True,
        description="At least one usable rating.",
    ),
    dg.AssetCheckSpec(
        "ratings_within_scale",
        asset=ratings_df,
        blocking=True,
        description="Every rating inside the configured scale.",
    ),
    dg.AssetCheckSpec(
        "ratings_volume",
        asset=ratings_df,
        blocking=True,
        description="The number of ratings did not drop by more than max_drop_fraction versus the "
        "last successful run (a half-empty read must never replace a good model).",
    ),
]


@dg.multi_asset_check(specs=RATINGS_CHECKS)
def ratings_df_checks(
    context: dg.AssetCheckExecutionContext, config: VolumeCheckConfig, ratings_df: pd.DataFrame
) -> Iterator[dg.AssetCheckResult]:
    """The three checks on `ratings_df`, in one step (config: `max_drop_fraction`, `lookback`)."""
    not_empty, within_scale, volume = RATINGS_CHECKS
    yield as_spec(not_empty, ratings_not_empty(ratings_df))
    scale = recorded_rating_scale(context.instance, context.run.run_id)
    yield as_spec(within_scale, ratings_within_scale(ratings_df, scale))
    yield as_spec(volume, ratings_volume(context.instance, context.run.run_id, config, ratings_df))


def ratings_not_empty(ratings_df: pd.DataFrame) -> dg.AssetCheckResult:
    rows = len(ratings_df)
    return dg.AssetCheckResult(
        passed=rows > 0,
        severity=ERROR,
        description=None if rows else "ratings_df is empty: nothing to train on",
        metadata={"rows": rows},
    )


def ratings_within_scale(ratings: pd.DataFrame, scale: tuple | None) -> dg.AssetCheckResult:
    values = pd.to_numeric(ratings["rating"], errors="coerce")
    observed = {
        "rating_min": float(values.min()) if len(values) else float("nan"),
        "rating_max": float(values.max()) if len(values) else float("nan"),
    }
    if scale is None:
        # Nothing to hold the ratings to is a failure, not a pass: they could hold anything.
        return dg.AssetCheckResult(
            passed=False,
            severity=ERROR,
            description="this run recorded no rating scale for ratings_df (its scale_min/"
            "scale_max), so its ratings cannot be checked; materialize ratings_df again",
            metadata=observed,
        )
    low, high = scale
    bad = int((values.isna() | (values < low) | (values > high)).sum())
    return dg.AssetCheckResult(
        passed=bad == 0,
        severity=ERROR,
        description=None if bad == 0 else f"{bad} ratings are missing or outside [{low}, {high}]",
        metadata={
            "outside_scale": bad,
            "scale_min": float(low),
            "scale_max": float(high),
            **observed,
        },
    )


def _previous_successful_rows(
    instance: dg.DagsterInstance, run_id: str, lookback: int
) -> tuple[int, str] | None:
    """`rows_kept` of the newest ratings_df materialization from another, successful run."""
    records = instance.fetch_materializations(ratings_df.key, limit=lookback).records
    for record in records:
        if record.run_id == run_id:
            continue
        run = instance.get_run_by_id(record.run_id)
        if run is None or run.status != dg.DagsterRunStatus.SUCCESS:
            continue
        value = record.asset_materialization.metadata.get("rows_kept")
        if value is not None:
            return int(value.value), record.run_id
    return None


def ratings_volume(
    instance: dg.DagsterInstance, run_id: str, config: VolumeCheckConfig, ratings_df: pd.DataFrame
) -> dg.AssetCheckResult:
    rows = len(ratings_df)
    previous = _previous_successful_rows(instance, run_id, config.lookback)
    if previous is None:
        return dg.AssetCheckResult(
            passed=True,
            description="no previous successful run to compare with",
            metadata={"rows": rows},
        )
    before, run_id = previous
    floor = math.ceil(before * (1.0 - config.max_drop_fraction))
    passed = rows >= floor
    drop = 1.0 - rows / before if before else 0.0
    return dg.AssetCheckResult(
        passed=passed,
        severity=ERROR,
        description=None
        if passed
        else f"{rows} ratings, down {drop:.0%} from {before} in the last successful run "
        f"{run_id}; more than the allowed {config.max_drop_fraction:.0%}. Training is "
        "blocked; if the drop is real, rerun with a larger max_drop_fraction "
        f"(`recsys run --max-drop-fraction {min(1.0, round(drop + 0.05, 2))}`, or the "
        "ratings_df_checks op config)",
        metadata={
            "rows": rows,
            "previous_rows": before,
            "previous_run_id": run_id,
            "drop_fraction": drop,
            "max_drop_fraction": config.max_drop_fraction,
        },
    )
