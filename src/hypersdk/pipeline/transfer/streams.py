"""How many datastore streams run at once: ``limits.streams_per_vcenter`` across every job.

A disk asks for ``pipeline.streams_per_disk`` streams and gets as many as its vCenter has free
(at least one); when none is free it waits, first come first served.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred, succeed

from .plan import streams_for


class StreamPool:
    def __init__(self, per_vcenter: int):
        self._limit = per_vcenter
        self._used: dict[str, int] = {}
        self._waiting: dict[str, deque] = {}

    def in_use(self, vcenter: str) -> int:
        return self._used.get(vcenter, 0)

    def acquire(self, vcenter: str, wanted: int) -> Deferred:
        """Fires with the number of streams granted (>= 1); cancelling a wait leaves the queue."""
        free = self._limit - self.in_use(vcenter)
        if free > 0 and not self._waiting.get(vcenter):
            return succeed(self._take(vcenter, streams_for(wanted, free)))
        queue = self._waiting.setdefault(vcenter, deque())
        waiter: Deferred = Deferred(lambda d: queue.remove((d, wanted)) if (d, wanted) in queue else None)
        queue.append((waiter, wanted))
        return waiter

    def release(self, vcenter: str, streams: int) -> None:
        self._used[vcenter] = self.in_use(vcenter) - streams
        queue = self._waiting.get(vcenter)
        while queue and self._limit - self.in_use(vcenter) > 0:
            waiter, wanted = queue.popleft()
            waiter.callback(self._take(vcenter, streams_for(wanted, self._limit - self.in_use(vcenter))))

    def _take(self, vcenter: str, streams: int) -> int:
        self._used[vcenter] = self.in_use(vcenter) + streams
        return streams
