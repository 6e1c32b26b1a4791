"""Self-fencing: a node that cannot renew its lease stops acting for its jobs before any other node
may take them over.

Another node takes a job over once its node's lease has not been renewed for ``lease`` seconds, by
the database server's clock. The server stamps a renewal after the node sent it, so the time since
this node *sent* its last successful renewal, on its own clock, is never shorter than the age the
other nodes see. Half a lease after that, this node fences itself: its copies stop (their files
kept, to resume), it claims no job, and it does no side effect on a destination until a renewal
succeeds again. Before each such side effect (create or remove a disk, define or start a domain)
the pipeline asks ``confirm``: the lease is fresh and the database says the job is still this
instance's.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..errors import JobLost, Unavailable


class Fence:
    log = Logger()

    def __init__(self, clock, lease_seconds: float, owns: Callable[[str], Deferred]):
        """``owns(job_id)``: fires True while this instance runs the job (asks the database)."""
        self._clock = clock
        self._lease = lease_seconds
        self._margin = lease_seconds / 2
        self._owns = owns
        self._sent_at: Optional[float] = None  # when the last renewal that succeeded was sent
        self._timer = None
        self._waiters: list[Deferred] = []
        self._on_fence: Callable[[str], None] = lambda reason: None
        self._on_unfence: Callable[[], None] = lambda: None
        self.fenced = False

    def follow(self, on_fence: Callable[[str], None], on_unfence: Callable[[], None]) -> None:
        """What to do when this node fences itself (stop its copies, claim nothing) and when its
        lease holds again."""
        self._on_fence, self._on_unfence = on_fence, on_unfence

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at ``sent_at`` (this node's clock) has succeeded."""
        if self._sent_at is not None and sent_at <= self._sent_at:
            return  # a late answer to an older renewal proves nothing newer
        self._sent_at = sent_at
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._clock.callLater(max(0.0, sent_at + self._margin - self._clock.seconds()), self._fence)
        if not self.fresh():  # a renewal that took half a lease to be answered renews nothing usable
            return
        if self.fenced:
            self.fenced = False
            self.log.info("this node's lease is renewed again: it takes jobs again")
            self._on_unfence()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:  # (a cancelled wait has fired already)
                waiter.callback(None)

    def fresh(self) -> bool:
        return self._sent_at is not None and self._clock.seconds() - self._sent_at < self._margin

    def _fence(self) -> None:
        if self.fenced or self.fresh():
            return
        self.fenced = True
        age = self._clock.seconds() - self._sent_at
        reason = (f"this node could not renew its lease for {age:.0f} s (the database cannot be reached);"
                  f" the other nodes may take its jobs over after {self._lease:g} s")
        self.log.warn("fenced: {reason}: its copies stop (their files are kept) and it takes no job until"
                      " its lease is renewed", reason=reason)
        self._on_fence(reason)

    async def confirm(self, job_id: str) -> None:
        """Return once this node's lease is fresh and the job still this instance's; raise JobLost if
        another node has it. While fenced, wait for the lease to be renewed."""
        while True:
            while not self.fresh():
                waiter: Deferred = Deferred()
                self._waiters.append(waiter)
                await waiter
            if not await self._owns(job_id):
                raise JobLost(job_id)
            if self.fresh():  # (asking the database may have taken long)
                return

    def stop(self) -> None:
        """The daemon stops: whatever still waits to confirm a job does nothing."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.errback(Unavailable("the daemon is stopping"))
