"""What `recsys run` prints: one line per stage from what the run's steps returned and
recorded, and on failure what changed and the cause."""

from __future__ import annotations

import time
from dataclasses import dataclass

from recsys_assets.settings import Settings


@dataclass
class RunSummary:
    success: bool
    lines: list[str]
    metadata: dict[str, dict[str, object]]


def _metadata(result, asset: str) -> dict[str, object]:
    """The metadata of `asset`'s newest materialization in the run, whichever step recorded it
    (the gates' step records the most-popular shelf it writes as `fallback_predictions`'); a
    write is preferred to a step that wrote nothing."""
    events = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key.to_user_string() == asset
    ]
    if not events:
        return {}
    written = [m for m in events if getattr(m.metadata.get("published"), "value", False)]
    return {k: v.value for k, v in (written or events)[-1].metadata.items()}


def failure_cause(error) -> str:
    """The underlying exception of a step failure (Dagster's SerializableErrorInfo), in one
    line: Dagster wraps user code errors ("Error occurred while executing op ..."), and the
    innermost cause is what a person can act on."""
    while error is not None and getattr(error, "cause", None) is not None:
        error = error.cause
    if error is None:
        return "unknown error"
    message = " ".join((error.message or "").split())
    # SerializableErrorInfo.message is "module.path.ClassName: text": keep "ClassName: text",
    # and only the text for dagster's Failure, whose text is written for people.
    head, sep, text = message.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == error.cls_name:
        message = text if error.cls_name == "Failure" else f"{error.cls_name}: {text}"
    return message or error.cls_name or "unknown error"


def summarize(result, note: str | None, start: float) -> RunSummary:
    wall = time.perf_counter() - start
    meta = {
        a: _metadata(result, a)
        for a in (
            "ratings_df",
            "svd_hyperparameters",
            "cv_report",
            "model_artifact",
            "champion_model",
            "fallback_predictions",
            "user_predictions",
        )
    }
    lines = [note] if note else []
    search = _search_line(meta["svd_hyperparameters"])
    if not result.success:
        lines += _failure_lines(result, meta, search, wall)
        return RunSummary(False, lines, meta)
    # What cv_report and model_artifact returned (a CVResult, the candidate's manifest); the
    # ratings read and the predictions written are recorded only as metadata.
    cv, art = _returned("cv_report", "model_artifact")
    r, pred = meta["ratings_df"], meta["user_predictions"]
    lines += [
        _ratings_line(r),
        *([search] if search else []),
        *_cv_lines(cv),
        f"model        {art['version']} -> {art['path']} (promoted: passed the gates)",
        f"predictions  {pred['users']} users, {pred['rows']} rows in table {pred['table']} "
        f"(model {pred['model_version']}, the champion's; {pred['users_popular']} cold-start "
        "users get most-popular)",
        f"wall time    {wall:.1f}s (run {result.run_id})",
    ]
    return RunSummary(True, lines, meta)


def _returned(*assets: str) -> list:
    """The values ``assets`` returned in the run that just succeeded, read back from where the
    IO manager stored them (`<base>/<asset>.pkl`), whichever executor ran the steps."""
    from upath import UPath

    from recsys_assets.resources.io_manager import PickleUPathIOManager

    base = UPath(Settings.from_env().io_manager_base)
    io = PickleUPathIOManager(base_path=base)
    return [io.load_from_path(None, base / f"{asset}{io.extension}") for asset in assets]


def _failure_lines(result, meta: dict, search: str | None, wall: float) -> list[str]:
    """Failed gates and data checks first: they say why the model was not promoted."""
    lines = []
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                lines.append(
                    f"CHECK FAILED {evaluation.asset_key.to_user_string()}:"
                    f"{evaluation.check_name}: {evaluation.description or ''}"
                )
    if search:
        lines.append(search)
    lines += _outcome_lines(meta)
    causes = [
        f"step {event.step_key} failed: {failure_cause(event.step_failure_data.error)}"
        for event in result.all_events
        if event.is_step_failure
    ]
    failed_checks = [line.removeprefix("CHECK FAILED ") for line in lines if "CHECK" in line]
    lines.append(f"run {result.run_id} failed after {wall:.1f}s")
    # The last line names the cause: the failed step's own exception, else the gate.
    cause = (failed_checks or causes or ["the run failed (see the Dagster UI)"])[0]
    lines.append(f"error: {cause}")
    return lines


def _ratings_line(r: dict[str, object]) -> str:
    dropped = ", ".join(
        f"{k.removeprefix('dropped_').replace('_', ' ')} {v}"
        for k, v in r.items()
        if k.startswith("dropped_")
    )
    flagged = ", ".join(
        f"{k.removeprefix('flagged_').replace('_', ' ')} {v}"
        for k, v in r.items()
        if k.startswith("flagged_") and v
    )
    if flagged:
        dropped += f"; flagged, kept: {flagged}"
    return (
        f"ratings      read {r['rows_read']}, kept {r['rows_kept']}, dropped {r['rows_dropped']}"
        f" ({dropped}); {r['users']} users, {r['movies']} movies"
    )


def _cv_lines(cv) -> list[str]:
    """The CV's figures (fold means; std over folds as cv_report's metadata) and which list
    ships."""
    mean = cv.folds.mean(numeric_only=True)
    std = cv.folds.std(ddof=0, numeric_only=True)
    shipped = (
        f"EASE ranking model, λ={cv.ease.lam:g}" if cv.policy.ranker == "ease" else "SVD blend"
    )
    evaluated = getattr(cv, "evaluated", None)
    return [
        *([f"evaluated    on {evaluated.describe()}"] if evaluated is not None else []),
        f"cv {cv.n_folds}-fold    RMSE {mean['rmse']:.4f} ± {std['rmse']:.4f}   "
        f"MAE {mean['mae']:.4f} ± {std['mae']:.4f}   "
        f"(BaselineOnly RMSE {mean['baseline_rmse']:.4f})",
        f"ranking      NDCG@10 {mean['shipped_ndcg']:.4f} shipped ({shipped}; {_ease(mean)}"
        f"blend {mean['blend_ndcg']:.4f}, "
        f"SVD-only {mean['svd_ndcg']:.4f}, most-popular {mean['popular_ndcg']:.4f})",
    ]


def _ease(mean) -> str:  # noqa: ANN001 - the folds' means (a pandas Series)
    """EASE's CV NDCG, or its validation NDCG when the folds fitted no EASE (the blend ships)."""
    if "ease_ndcg" in mean:
        return f"EASE {mean['ease_ndcg']:.4f}, "
    if "ease_validation_ndcg" in mean:
        return (
            f"EASE not shipped: validation NDCG@10 {mean['ease_validation_ndcg']:.4f} vs the "
            f"blend's {mean['blend_validation_ndcg']:.4f}; "
        )
    return ""


def _outcome_lines(meta: dict[str, dict[str, object]]) -> list[str]:
    """What a failed run changed, from what its steps recorded: whether the candidate was
    promoted (`champion_model` materializes only after latest.json and the history both
    name it), and whose suggestions `user_predictions` holds now."""
    art, champ = meta["model_artifact"], meta["champion_model"]
    fallback, pred = meta["fallback_predictions"], meta["user_predictions"]
    lines = []
    if champ:
        champion = str(champ["version"])
        lines.append(
            f"model        {champion} promoted: passed the gates; latest.json and the history "
            "name it and serving uses it"
        )
    else:
        # fallback_predictions reads the champion; when it did not run, latest.json and
        # user_predictions were not touched by this run either.
        champion = str(fallback["champion"]) if fallback else None
        if art:
            stays = {
                None: "latest.json and user_predictions are unchanged",
                "none": "there is no champion yet: no model was promoted",
            }.get(champion, f"latest stays with the champion {champion}")
            lines.append(f"model        {art['version']} saved but NOT promoted; {stays}")
    if pred:
        held = str(pred["model_version"])
    elif fallback.get("published"):
        held = str(fallback["model_version"])
    else:
        held = str(fallback.get("model_version", "unknown")) if fallback else "unknown"
    if held == "most-popular" and fallback.get("published") and not pred:
        lines.append(
            f"predictions  most-popular suggestions for all {fallback['users']} users "
            f"({fallback['rows']} rows, source='popular') until a model passes the gates"
        )
    elif fallback.get("deferred"):
        lines.append(
            "predictions  user_predictions unchanged: no champion yet, and the run failed "
            "before publishing the candidate's lists or the most-popular shelf (left to the "
            "gates); materialize fallback_predictions on its own to write the shelf now"
        )
    elif champion in (None, "none"):
        pass
    elif held == champion:
        how = "republished" if (pred or fallback.get("published")) else "unchanged"
        lines.append(f"predictions  user_predictions holds the champion's suggestions ({how})")
    elif held == "unknown":
        lines.append(
            f"predictions  NOT known to be the champion's ({champion}): user_predictions was "
            "not written; the next `recsys run` republishes them (gates or not)"
        )
    else:
        lines.append(
            f"predictions  NOT the champion's: user_predictions holds model {held}'s, the "
            f"champion is {champion}; the next `recsys run` republishes them (gates or not)"
        )
    return lines


def _search_line(meta: dict[str, object]) -> str | None:
    """The hyperparameter line of the summary (None when the search step did not run)."""
    if not meta:
        return None
    chosen = " ".join(
        f"{k}={meta[k]:g}" for k in ("n_factors", "n_epochs", "lr_all", "reg_all") if k in meta
    )
    if meta.get("tuning") != "search":
        return f"tuning       fixed: {chosen}"
    return (
        f"tuning       chose {chosen} ({meta['chosen']}): validation RMSE "
        f"{meta['validation_rmse']:.4f}, seed's {meta['seed_validation_rmse']:.4f}; "
        f"{meta['configurations']} configurations, {meta['fits']} fits in "
        f"{meta['search_seconds']:.1f}s"
    )
