"""Serving, the stores and the CLI's model commands work without importing Dagster; the CLI
loads `recsys run`'s modules only when that command runs."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from surprise import SVD, Reader

import recsys_assets
from recsys_assets.ml.artifacts import ArtifactStore
from recsys_assets.ml.datasets import CompactDataset
from recsys_assets.ml.stripped_svd import strip_svd

PACKAGE = Path(recsys_assets.__file__).parent


def _run(code: str, home: Path) -> dict:
    """Run `code` in a fresh interpreter; it prints a JSON dict, plus whether dagster loaded."""
    env = {**os.environ, "RECSYS_HOME": str(home)}
    for var in ("RECSYS_DATABASE_URL", "RECSYS_SCHEMA", "DAGSTER_HOME"):
        env.pop(var, None)
    script = code + "\nimport json, sys\nout['dagster'] = 'dagster' in sys.modules\n"
    script += "print(json.dumps(out))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_serving_stores_and_cli_import_without_dagster(tmp_path):
    out = _run(
        "import recsys_assets.serving, recsys_assets.cli, recsys_assets.db\n"
        "import recsys_assets.ml.artifacts, recsys_assets.usage\n"
        "out = {}",
        tmp_path,
    )
    assert out["dagster"] is False


def _svd(ratings, seed: int) -> SVD:
    """A model as the pipeline ships it (fitted on a CompactDataset, stripped)."""
    data = CompactDataset.from_df(
        ratings[["user_id", "movie_id", "rating"]], Reader(rating_scale=(0.5, 5))
    )
    model = SVD(n_factors=3, n_epochs=3, random_state=seed).fit(data.build_full_trainset())
    return strip_svd(model)


def test_model_commands_and_recommend_run_without_dagster(demo_db, recsys_home):
    ratings = demo_db.read_ratings()
    store = ArtifactStore(recsys_home / "models" / "surprise")
    first = store.save(_svd(ratings, 0), {"cv_metrics": {"rmse_mean": 0.9}})
    second = store.save(_svd(ratings, 1), {}, promote=False)
    code = (
        "from recsys_assets.cli import main\n"
        "out = {'list': main(['models', 'list']),\n"
        f"       'show': main(['models', 'show', {first['version']!r}]),\n"
        f"       'promote': main(['models', 'promote', {second['version']!r}]),\n"
        "       'rollback': main(['models', 'rollback']),\n"
        "       'prune': main(['models', 'prune', '--keep', '5']),\n"
        "       'recommend': main(['recommend', '1', '--n', '3'])}\n"
    )
    out = _run(code, recsys_home)
    assert out["dagster"] is False
    assert out == {
        **dict.fromkeys(("list", "show", "promote", "rollback", "prune", "recommend"), 0),
        "dagster": False,
    }
    assert store.latest_manifest()["version"] == first["version"]


def _imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


# `recsys run` / `recsys ui` (Dagster, the definitions) behind the commands every call loads.
RUN_MODULES = {"recsys_assets.cli.run", "recsys_assets.cli.summary", "recsys_assets.cli.instance"}


def test_the_cli_loads_the_run_modules_only_lazily():
    for name in ("__init__", "parser", "data", "models", "recommend"):
        path = PACKAGE / "cli" / f"{name}.py"
        top_level = [
            node
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.Import | ast.ImportFrom)
        ]
        modules = {getattr(n, "module", None) for n in top_level} | {
            a.name for n in top_level if isinstance(n, ast.Import) for a in n.names
        }
        assert not modules & RUN_MODULES, path.name
    # and they do import them, inside the handlers
    assert RUN_MODULES - {"recsys_assets.cli.summary"} <= _imported_modules(
        PACKAGE / "cli" / "parser.py"
    )
