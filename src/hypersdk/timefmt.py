"""RFC 3339 timestamps in UTC with a Z suffix, as every JSON shape uses them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional


def rfc3339(seconds: Optional[float]) -> Optional[str]:
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
