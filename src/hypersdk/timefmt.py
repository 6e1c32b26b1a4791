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
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"
