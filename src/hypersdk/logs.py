"""The daemon's log observer: text or JSON lines on stdout, filtered by level."""

from __future__ import annotations

import json
import sys

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)

from .config import LogConfig
from .timefmt import rfc3339

_SIMPLE = (str, int, float, bool, type(None))


def json_line(event: dict) -> str:
    """One log event as a JSON object: time, level, namespace, message and the event's own keys.

    Only plain values of keys the event names itself are kept (``job_id``,
    ``status``, ...); twisted.logger's internals and objects are left out.
    """
    record = {
        "time": rfc3339(event.get("log_time")),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if not key.startswith("log_") and key not in record and isinstance(value, _SIMPLE):
            record[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record) + "\n"


def build_observer(config: LogConfig, out=None):
    out = out or sys.stdout
    base = FileLogObserver(out, json_line) if config.format == "json" else textFileLogObserver(out)
    level = LogLevel.levelWithName(config.level)
    return FilteringLogObserver(base, [LogLevelFilterPredicate(defaultLogLevel=level)])
