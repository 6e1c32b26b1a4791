"""The daemon's log observer: text or JSON lines on stdout, filtered by level."""

from __future__ import annotations

import sys

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

from .config import LogConfig


def build_observer(config: LogConfig, out=None):
    out = out or sys.stdout
    if config.format == "json":
        base = jsonFileLogObserver(out, recordSeparator="")  # one JSON object per line
    else:
        base = textFileLogObserver(out)
    level = LogLevel.levelWithName(config.level)
    return FilteringLogObserver(base, [LogLevelFilterPredicate(defaultLogLevel=level)])
