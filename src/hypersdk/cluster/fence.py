"""Self-fencing: a node that cannot renew its lease stops acting for its jobs before any other node
may take them over.

Another node takes a job over once its node's lease has not been renewed for ``lease`` seconds, by
the database server's clock. The server stamps a renewal after the node sent it, so the time since
this node *sent* its last successful renewal, on its own clock, is never shorter than the age the
other nodes see. Half a lease after that, this node fences itself: its copies stop (their files
kept, to resume), it claims no job, and it does no side effect on a destination until a renewal
succeeds again. Before each such side effect (create or remove a disk, change the guest, define or
start a domain) the pipeline asks ``confirm``: the lease is fresh, and the database, in one
transaction, says the job is still this instance's and records the stage it is in, so that a node
taking it over later judges it by where it really is.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..errors import Unavailable

STOPPING_SECONDS = 3.0  # how long a confirmation may wait for the database once the daemon stops


class Fence:
    log = Logger()

    def __init__(self, clock, lease_seconds: float, record: Callable[..., Deferred]):
        """``record(job_id, progress, now)``: stores the job's progress if this instance still runs it,
        else fails with JobLost (JobStore.confirm_progress)."""
        self._clock = clock
        self._lease = lease_seconds
        self._margin = lease_seconds / 2
        self._record = record
        self._sent_at: Optional[float] = None  # when the last renewal that succeeded was sent
        self._timer = None
        self._waiters: list[Deferred] = []
        self._on_fence: Callable[[str], None] = lambda reason: None
        self._on_unfence: Callable[[], None] = lambda: None
        self._revoked = False  # another daemon holds this node's name: fenced for good
        self._stopping = False
        self.fenced = False

    def follow(self, on_fence: Callable[[str], None], on_unfence: Callable[[], None]) -> None:
        """What to do when this node fences itself (stop its copies, claim nothing) and when its
        lease holds again."""
        self._on_fence, self._on_unfence = on_fence, on_unfence

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at ``sent_at`` (this node's clock) has succeeded."""
        if self._revoked or (self._sent_at is not None and sent_at <= self._sent_at):
            return  # a late answer to an older renewal proves nothing newer
        self._sent_at = sent_at
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._clock.callLater(max(0.0, sent_at + self._margin - self._clock.seconds()), self._expire)
        if not self.fresh():  # a renewal that took half a lease to be answered renews nothing usable
            return
        if self.fenced:
            self.fenced = False
            self.log.info("this node's lease is renewed again: it takes jobs again")
            self._on_unfence()
        self._wake(None)

    def fresh(self) -> bool:
        return (not self._revoked and self._sent_at is not None
                and self._clock.seconds() - self._sent_at < self._margin)

    def revoke(self, reason: str) -> None:
        """Another daemon has taken this node's name: fenced now, and for good."""
        self._revoked = True
        self._fence(reason)

    def _expire(self) -> None:
        if not self.fresh():
            age = self._clock.seconds() - self._sent_at
            self._fence(f"this node could not renew its lease for {age:.0f} s (the database cannot be reached);"
                        f" the other nodes may take its jobs over after {self._lease:g} s")

    def _fence(self, reason: str) -> None:
        if self.fenced:
            return
        self.fenced = True
        self.log.warn("fenced: {reason}: its copies stop (their files are kept) and it takes no job until"
                      " its lease is renewed", reason=reason)
        self._on_fence(reason)

    async def confirm(self, job_id: str, progress) -> None:
        """Return once this node's lease is fresh and the database has recorded ``progress`` as the
        job's, this instance still running it; raise JobLost if another node has it. While fenced,
        wait for the lease to be renewed; once the daemon is stopping, raise Unavailable."""
        while True:
            while not self.fresh():
                if self._stopping:
                    raise Unavailable("the daemon is stopping")
                waiter: Deferred = Deferred()
                self._waiters.append(waiter)
                await waiter
            recording = self._record(job_id, progress, self._clock.seconds())
            if self._stopping:  # the daemon stops within its stop timeout: a database that hangs is not waited for
                recording.addTimeout(STOPPING_SECONDS, self._clock)
            try:
                await recording
            except TimeoutError:
                raise Unavailable("the daemon is stopping and the database does not answer") from None
            if self.fresh():  # (the database may have taken long to answer)
                return

    def stopping(self) -> None:
        """The daemon stops: whatever waits to confirm a job, or would, does nothing."""
        self._stopping = True
        self._wake(Unavailable("the daemon is stopping"))

    def stop(self) -> None:
        self.stopping()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def _wake(self, error: Optional[Exception]) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if waiter.called:  # (a cancelled wait has fired already)
                continue
            if error is None:
                waiter.callback(None)
            else:
                waiter.errback(error)
