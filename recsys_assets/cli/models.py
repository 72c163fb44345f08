"""`recsys models list | show | promote | rollback | prune`: the model store, without Dagster."""

from __future__ import annotations

import argparse
import json
import sys

from recsys_assets.ml.artifacts import ArtifactError, ArtifactIntegrityError, ArtifactStore
from recsys_assets.usage import UsageError


def _store() -> ArtifactStore:
    return ArtifactStore.from_env()


def _fmt(value: object, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


_HISTORY_REPAIR = (
    "the next promotion (`recsys run`, `recsys models promote VERSION` or `recsys models "
    "rollback`) keeps the damaged file aside and rebuilds it"
)


def _history_or_warn(store: ArtifactStore) -> tuple[list[dict], str | None]:
    """The promotion history, or [] and what is wrong with it (reported, never raised)."""
    try:
        return store.history(), None
    except ArtifactIntegrityError as exc:
        print(f"BROKEN champions.json: {exc}; {_HISTORY_REPAIR}", file=sys.stderr)
        return [], str(exc)


def _champion_or_problem(store: ArtifactStore) -> tuple[dict | None, str | None]:
    try:
        return store.latest_manifest(), None
    except (ArtifactIntegrityError, OSError) as exc:
        return None, str(exc)


def _report_repairs(store: ArtifactStore) -> None:
    for repair in store.repairs:
        print(f"repaired: {repair}", file=sys.stderr)


def _latest_pointer_problem(store: ArtifactStore) -> str | None:
    """Why latest.json cannot be used, or None (missing is not a problem: nothing promoted)."""
    try:
        store.latest_pointer()
    except (ArtifactIntegrityError, OSError) as exc:
        return str(exc)
    return None


# fallback_predictions republishes whenever the table is not the champion's, gates or not.
_REPUBLISH = (
    "user_predictions still holds the previous champion's suggestions: the next `recsys run` "
    "(or a materialization of fallback_predictions or user_predictions) republishes them"
)


def cmd_models_list(args: argparse.Namespace) -> int:
    """Every version, verified (size, SHA-256, signature with a key); broken ones marked."""
    store = _store()
    versions, unreadable = store.scan()
    if not versions and not unreadable:
        print(f"no model versions under {store.root}")
        return 0
    latest, champion_problem = _champion_or_problem(store)
    current = latest["version"] if latest else None
    history, history_problem = _history_or_warn(store)
    ever = {e["version"] for e in history}
    header = f"{'version':<27} {'created (UTC)':<20} {'CV RMSE':>8} {'baseline':>8} "
    print(header + f"{'NDCG@10':>8}  {'promoted':<8}  status")
    problems = dict(unreadable)
    rows = {m["version"]: m for m in versions}
    for version in sorted({*rows, *unreadable}):
        m = rows.get(version, {})
        cv = m.get("cv_metrics") or {}
        promoted = "champion" if version == current else ("was" if version in ever else "no")
        problem = problems.get(version) or (store.verify(m) if m else None)
        if problem:
            problems[version] = problem
        print(
            f"{version:<27} {str(m.get('created_at', ''))[:19]:<20} "
            f"{_fmt(cv.get('rmse_mean')):>8} {_fmt(cv.get('baseline_rmse_mean')):>8} "
            f"{_fmt(cv.get('shipped_ndcg_mean', cv.get('blend_ndcg_mean'))):>8}  {promoted:<8}  "
            + ("BROKEN" if problem else "ok")
        )
    for version, problem in sorted(problems.items()):
        print(f"BROKEN {version}: {problem}", file=sys.stderr)
    pointer = _latest_pointer_problem(store)
    if pointer:
        fallback = f"; champion per history: {current}" if current else ""
        print(
            f"BROKEN latest.json: {pointer}{fallback}. Recover with `recsys models promote "
            "VERSION` (or `recsys models rollback`)",
            file=sys.stderr,
        )
    if champion_problem:
        print(f"BROKEN store: {champion_problem}", file=sys.stderr)
    return 1 if problems or pointer or history_problem or champion_problem else 0


def cmd_models_show(args: argparse.Namespace) -> int:
    store = _store()
    try:
        _, manifest = store.load_version(args.version)  # verifies checksum/signature too
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    except ArtifactError as exc:
        raise UsageError(str(exc)) from exc
    latest, _ = _champion_or_problem(store)
    history = [e for e in _history_or_warn(store)[0] if e["version"] == args.version]
    print(json.dumps(manifest, indent=2, sort_keys=True))
    print(f"champion now: {'yes' if latest and latest['version'] == args.version else 'no'}")
    for entry in history:
        rolled = f", rolled back {entry['rolled_back_at']}" if entry.get("rolled_back_at") else ""
        when = entry.get("promoted_at") or "(time unknown)"
        print(f"promoted {when} ({entry['reason']}){rolled}")
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:

    store = _store()
    previous, problem = _champion_or_problem(store)
    try:
        manifest = store.promote(args.version, reason="manual: recsys models promote")
    except (ValueError, ArtifactError) as exc:
        raise UsageError(str(exc)) from exc
    finally:
        _report_repairs(store)
    was = previous["version"] if previous else ("unknown: " + problem if problem else "none")
    print(f"promoted {manifest['version']} (previous champion: {was})")
    print(_REPUBLISH)
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:

    store = _store()
    try:
        old, new = store.rollback()
    except ArtifactError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        _report_repairs(store)
    print(f"rolled back from {old['version']} to {new['version']}")
    print(_REPUBLISH)
    return 0


def cmd_models_prune(args: argparse.Namespace) -> int:
    store = _store()
    # Also removes temp files of killed writes; no --keep: the store's default retention.
    deleted = store.prune(args.keep) if args.keep is not None else store.prune()
    print(f"deleted {len(deleted)} versions" + (f": {', '.join(deleted)}" if deleted else ""))
    return 0
