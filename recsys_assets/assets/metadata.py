"""Helpers that turn results into metadata the Dagster UI can show and plot."""

from __future__ import annotations

import resource

import pandas as pd


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss is KiB on Linux).

    Under the multiprocess and Celery executors every step is its own process, so this is the
    step's own peak; in process it is the run's peak up to the end of the step.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A GitHub-style markdown table; floats formatted so columns line up in the UI."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "–" if value != value else format(value, floatfmt)  # NaN: not applicable
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *rows])
