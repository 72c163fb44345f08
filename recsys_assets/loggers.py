"""`brief_console`: Dagster's console log without stack traces, for `recsys run`.

A failed step's full traceback (50-140 lines) would bury the one line that says what went
wrong; `recsys run` prints that cause last (`error: ...`) and shows tracebacks only with
`--verbose` (which selects Dagster's own `console` logger instead).
"""

from __future__ import annotations

import logging
import sys

import dagster as dg

_STACK_MARKER = "Stack Trace:"


class _BriefFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        head, marker, _ = text.partition(_STACK_MARKER)
        return f"{head.rstrip()}\n  (traceback: rerun with --verbose)" if marker else text


@dg.logger(
    config_schema={"log_level": dg.Field(str, default_value="INFO")},
    description="Console log without stack traces (recsys run without --verbose).",
)
def brief_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    level = init_context.logger_config["log_level"].upper()
    logger = logging.Logger("dagster", level=level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_BriefFormatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    logger.addHandler(handler)
    return logger
