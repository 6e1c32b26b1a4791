"""RFC 3339 timestamps in UTC with a Z suffix, as every JSON shape uses them; durations as people say them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional


def rfc3339(seconds: Optional[float]) -> Optional[str]:
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def duration(seconds: float) -> str:
    """``7 d``, ``36 h``, ``90 min``, ``2 s``: the largest unit that leaves a whole number."""
    value, unit = _in_largest_unit(seconds, minute="min")
    return f"{value:g} {unit}"


def parse_rfc3339(text: str) -> Optional[float]:
    """Epoch seconds of an RFC 3339 time with its offset ("Z" or "+01:00"); None if it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return None if moment.tzinfo is None else moment.timestamp()


def duration_setting(seconds: float) -> str:
    """``1h``, ``90m``, ``30s``: as a setting or an option writes a duration (config.parse_duration reads it)."""
    value, unit = _in_largest_unit(seconds, minute="m")
    return f"{value:g}{unit}"


def _in_largest_unit(seconds: float, minute: str) -> tuple[float, str]:
    for unit, size in (("d", 86400), ("h", 3600), (minute, 60)):
        if seconds >= size and seconds % size == 0:
            return seconds / size, unit
    return seconds, "s"
