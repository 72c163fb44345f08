"""The embedded Dagster instance `recsys run` and `recsys ui` share, and `recsys ui` itself."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from recsys_assets.settings import Settings

EMBEDDED_HEADER = "# Embedded Dagster instance of recsys_assets"
EMBEDDED_DAGSTER_YAML = f"""\
{EMBEDDED_HEADER}: SQLite storage in this directory.
# For PostgreSQL storage point DAGSTER_HOME at a directory with a PostgreSQL dagster.yaml.
telemetry:
  enabled: false
# One training run at a time, as in deploy/dagster.yaml: the run queue tags every training
# run (training_job, Materialize all) recsys/job=training and starts one while none is in
# progress; `recsys run` waits for or refuses a training in progress (run_lock.py).
run_coordinator:
  module: recsys_assets.run_queue
  class: TrainingRunQueue
concurrency:
  runs:
    tag_concurrency_limits:
      - key: recsys/job
        value: training
        limit: 1
# With `recsys ui` (its daemon): runs stuck starting or canceling, or running for more than
# 3 hours, are marked failed instead of blocking the one-training-at-a-time limit forever.
# A killed run worker is failed at once by the code server that launched it; runs of
# `recsys run` are checked by process (recsys_assets/run_liveness.py).
run_monitoring:
  enabled: true
  start_timeout_seconds: 300
  cancel_timeout_seconds: 300
  max_runtime_seconds: 10800
  poll_interval_seconds: 60
# context.log.debug lines (e.g. the IO manager's "Loading file from ...") are not stored: each
# is an event log row (60 of an ml-100k run's 325), and Dagster's own events are kept at any
# level.
python_logs:
  python_log_level: INFO
"""


def prepare_dagster_home(settings: Settings | None = None) -> str:
    """Create the instance directory (and a minimal dagster.yaml) and export DAGSTER_HOME.

    `recsys run` and `recsys ui` use the same directory, so runs started here show in the UI.
    """
    home = (settings or Settings.from_env()).dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    # Ours to write when missing, and to update when an older version of this project wrote
    # it (its first line); a file anyone else wrote is left as it is.
    if not config.exists() or (
        config.read_text().startswith(EMBEDDED_HEADER)
        and config.read_text() != EMBEDDED_DAGSTER_YAML
    ):
        config.write_text(EMBEDDED_DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return str(home)


def ui_command(args: argparse.Namespace) -> int:
    """`dagster dev` on this project's workspace.yaml and instance (replaces this process)."""
    home = prepare_dagster_home()
    workspace = Path(__file__).resolve().parents[2] / "workspace.yaml"
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster), "dev", "-w", str(workspace), "--host", args.host, "--port", str(args.port)]
    print(f"DAGSTER_HOME={home}\n{' '.join(cmd)}", flush=True)
    os.execv(cmd[0], cmd)
    return 0  # not reached
