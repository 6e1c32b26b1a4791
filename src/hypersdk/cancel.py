"""Cancellation for work that runs in threads, and waiting for work that cannot be cancelled.

A Deferred cannot interrupt a thread; the canceller sets a token instead and the
blocking code checks it between calls (``token.raise_if_cancelled()``) or waits
on it instead of sleeping (``token.wait(seconds)``). ``within`` waits for a
Deferred at most so long, and then goes on without it.
"""

from __future__ import annotations

import threading

from twisted.internet.defer import CancelledError, Deferred


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


def within(clock, d: Deferred, seconds: float) -> Deferred:
    """Wait for ``d`` at most ``seconds`` (then go on without cancelling it)."""
    waiter: Deferred = Deferred()
    timer = clock.callLater(seconds, lambda: waiter.called or waiter.callback(None))

    def done(_):
        if timer.active():
            timer.cancel()
        if not waiter.called:
            waiter.callback(None)

    d.addBoth(done)
    return waiter
