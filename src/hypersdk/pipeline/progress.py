"""Pure progress parsing and rate/ETA arithmetic for the conversion tools."""

from __future__ import annotations

import json
import re
from collections import deque
from typing import Optional

_QEMU_IMG = re.compile(r"^\s*\((\d+(?:\.\d+)?)/100%\)\s*$")


def qemu_img_percent(line: str) -> Optional[float]:
    """``"    (45.12/100%)"`` → 45.12 (qemu-img convert/compare -p); None for other lines."""
    match = _QEMU_IMG.match(line)
    return float(match.group(1)) if match else None


def virt_v2v_event(line: str) -> Optional[dict]:
    """One ``--machine-readable`` JSON message of virt-v2v, or None for other lines."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


class RateMeter:
    """Transfer rate over a sliding window of samples, and the ETA it implies."""

    def __init__(self, window_seconds: float = 5.0):
        self._window = window_seconds
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done_bytes: int) -> None:
        self._samples.append((now, done_bytes))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def eta(self, remaining_bytes: int) -> Optional[float]:
        rate = self.rate()
        if remaining_bytes <= 0:
            return 0.0
        return remaining_bytes / rate if rate > 0 else None
