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


def _history_or_warn(store: ArtifactStore) -> list[dict]:
    try:
        return store.history()
    except ArtifactIntegrityError as exc:
        print(f"warning: {exc}; promotion history unavailable", file=sys.stderr)
        return []


def _latest_pointer_problem(store: ArtifactStore) -> str | None:
    """Why latest.json cannot be used, or None (missing is not a problem: nothing promoted)."""
    try:
        store.latest_pointer()
    except (ArtifactIntegrityError, OSError) as exc:
        return str(exc)
    return None


def cmd_models_list(args: argparse.Namespace) -> int:
    """Every version, verified (size, SHA-256, signature with a key); broken ones marked."""
    store = _store()
    versions, unreadable = store.scan()
    if not versions and not unreadable:
        print(f"no model versions under {store.root}")
        return 0
    latest = store.latest_manifest()
    current = latest["version"] if latest else None
    ever = {e.get("version") for e in _history_or_warn(store) if isinstance(e, dict)}
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
    return 1 if problems or pointer else 0


def cmd_models_show(args: argparse.Namespace) -> int:
    store = _store()
    try:
        _, manifest = store.load_version(args.version)  # verifies checksum/signature too
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    except ArtifactError as exc:
        raise UsageError(str(exc)) from exc
    latest = store.latest_manifest()
    history = [e for e in _history_or_warn(store) if e.get("version") == args.version]
    print(json.dumps(manifest, indent=2, sort_keys=True))
    print(f"champion now: {'yes' if latest and latest['version'] == args.version else 'no'}")
    for entry in history:
        rolled = f", rolled back {entry['rolled_back_at']}" if entry.get("rolled_back_at") else ""
        print(f"promoted {entry['promoted_at']} ({entry['reason']}){rolled}")
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:

    store = _store()
    previous = store.latest_manifest()
    try:
        manifest = store.promote(args.version, reason="manual: recsys models promote")
    except (ValueError, ArtifactError) as exc:
        raise UsageError(str(exc)) from exc
    was = previous["version"] if previous else "none"
    print(f"promoted {manifest['version']} (previous champion: {was})")
    print("rematerialize user_predictions to publish its suggestions")
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:

    try:
        old, new = _store().rollback()
    except ArtifactError as exc:
        raise UsageError(str(exc)) from exc
    print(f"rolled back from {old['version']} to {new['version']}")
    print("rematerialize user_predictions to publish its suggestions")
    return 0


def cmd_models_prune(args: argparse.Namespace) -> int:
    deleted = _store().prune(args.keep)  # also removes temp files of killed writes
    print(f"deleted {len(deleted)} versions" + (f": {', '.join(deleted)}" if deleted else ""))
    return 0
