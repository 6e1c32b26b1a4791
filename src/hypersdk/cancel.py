"""Cancellation for work that runs in threads.

A Deferred cannot interrupt a thread; the canceller sets a token instead and the
blocking code checks it between calls (``token.raise_if_cancelled()``) or waits
on it instead of sleeping (``token.wait(seconds)``).
"""

from __future__ import annotations

import threading

from twisted.internet.defer import CancelledError


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError()

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``; raise CancelledError as soon as cancelled."""
        if self._event.wait(seconds):
            raise CancelledError()
