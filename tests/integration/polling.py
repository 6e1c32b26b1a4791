"""Waiting for a condition with a deadline: how integration tests wait, never a fixed sleep."""

from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], Optional[T]], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy (returned); AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))  # the polling interval
        delay = min(delay * 2, 0.2)
