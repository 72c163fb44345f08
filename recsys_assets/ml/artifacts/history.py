"""The champion history (``champions.json``) and how it stays in step with ``latest.json``.

Two files cannot be replaced in one operation, so a promotion or rollback is a small
two-phase commit in which ``latest.json`` is the commit point:

1. the history is written with the change marked ``"pending": true`` (the intent);
2. ``latest.json`` is replaced (the commit: from here on serving has the new model);
3. the history is written again without the mark (tidying; readers do not need it).

Readers settle a pending mark against the pointer, so a crash or a failed write at any
point leaves one consistent answer: a pending promotion of V counts only if ``latest.json``
names V; a pending rollback of V counts only if ``latest.json`` no longer names V. Serving
(which reads only ``latest.json``), the registry and the next run therefore always agree.

A damaged history (not JSON, not a list of entries) is rebuilt by the next promotion or
rollback: the bytes are kept as ``champions.json.damaged-<UTC time>``, the current champion
(from ``latest.json``) is recorded, and versions the damaged bytes still name (with a manifest
on disk) are kept as ``salvaged`` entries, so retention still keeps them; a rollback never
returns to a salvaged entry (its promotion record is lost).
"""

from __future__ import annotations

import datetime as dt
import re

from recsys_assets.ml.artifacts.manifest import (
    HISTORY_NAME,
    VERSION_RE,
    ArtifactIntegrityError,
    load_json,
)

PENDING = "pending"
SALVAGED = "salvaged"
_VERSION_IN_TEXT = re.compile(rb"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def entry(version: str, reason: str) -> dict:
    return {"version": version, "promoted_at": now_iso(), "reason": reason, "rolled_back_at": None}


def parse_history(data: bytes, source: object) -> list[dict]:
    """The entries in ``data``; ArtifactIntegrityError naming ``source`` if it is no history."""
    history = load_json(data, str(source), list, "a JSON list")
    for i, item in enumerate(history):
        version = item.get("version") if isinstance(item, dict) else None
        if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
            raise ArtifactIntegrityError(f"{source}: entry {i} is not a champion entry: {item!r}")
    return history


def resolve(history: list[dict], pointer: str | None) -> list[dict]:
    """``history`` with its pending marks settled against ``pointer`` (latest.json's version;
    None when it is missing or unreadable: then nothing pending is confirmed)."""
    resolved = []
    for item in history:
        if not item.get(PENDING):
            resolved.append(item)
            continue
        settled = {k: v for k, v in item.items() if k != PENDING}
        if settled.get("rolled_back_at"):
            # A rollback away from this version happened only if the pointer left it.
            if pointer is None or pointer == item["version"]:
                settled["rolled_back_at"] = None
            resolved.append(settled)
        elif pointer == item["version"]:
            resolved.append(settled)  # the promotion reached latest.json
        # else: a promotion that never reached latest.json did not happen
    return resolved


def damaged_copy_name() -> str:
    return f"{HISTORY_NAME}.damaged-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"


def rebuild(
    damaged: bytes, copy_name: str, champion: str | None, known_versions: set[str]
) -> list[dict]:
    """A history for a store whose champions.json was damaged (its bytes kept in
    ``copy_name``): the versions the bytes still name that exist (``salvaged``, never a
    rollback target), then the current ``champion`` (latest.json's version)."""
    named = {m.decode() for m in _VERSION_IN_TEXT.findall(damaged)} & known_versions
    rebuilt = [
        {
            "version": version,
            "promoted_at": None,
            "reason": f"named in a damaged {HISTORY_NAME} (kept as {copy_name}); "
            "its promotion record was lost",
            "rolled_back_at": None,
            SALVAGED: True,
        }
        for version in sorted(named - {champion})
    ]
    if champion is not None:
        record = entry(champion, f"champion per latest.json when {HISTORY_NAME} was rebuilt")
        rebuilt.append({**record, "promoted_at": None})  # when it was promoted is lost
    return rebuilt
