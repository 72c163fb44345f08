"""Helpers that turn results into metadata the Dagster UI can show and plot."""

from __future__ import annotations

import pandas as pd


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
