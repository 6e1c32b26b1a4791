"""A running job's worker slot, which a warm job gives back while it waits for its next pass.

``worker_count`` bounds the jobs doing work on a node. A warm job spends most of its life between
passes (an hour, by default), doing nothing: it gives its slot back for that time, so that the node
runs other jobs, and takes one again before its next pass or its cutover. Warm jobs waiting to take
one back come before pending jobs: they have started, and their source is waiting for its pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from twisted.internet.defer import Deferred, succeed


class WorkerSlots:
    """The node's slots: who holds one, who waits to take one back."""

    def __init__(self, count: int, on_free: Callable[[], None]):
        self.count = count
        self._on_free = on_free  # a slot may be free now: start pending jobs
        self._idle: set[str] = set()  # jobs running without a slot (between warm passes)
        self._waiting: list[tuple[str, Deferred]] = []
        self._claims = 0  # slots held for a job being claimed from the store

    def busy(self, running) -> int:
        """Slots held by the ``running`` job ids (what /status calls active workers)."""
        return sum(1 for job_id in running if job_id not in self._idle)

    @contextmanager
    def claiming(self) -> Iterator[None]:
        """A slot held while a job is claimed: the store answers later, and the job runs only then."""
        self._claims += 1
        try:
            yield
        finally:
            self._claims -= 1

    def free(self, running) -> int:
        """Slots a pending job may take: what is left once the waiting warm jobs have theirs."""
        return self.count - self.busy(running) - self._claims - len(self._waiting)

    def hand_out(self, running) -> None:
        """Give free slots to the warm jobs waiting for one, first come first served."""
        while self._waiting and self.busy(running) + self._claims < self.count:
            job_id, taken = self._waiting.pop(0)
            self._idle.discard(job_id)
            taken.callback(None)

    def ended(self, job_id: str) -> None:
        self._idle.discard(job_id)
        self._waiting = [(other, d) for other, d in self._waiting if other != job_id]

    def give_back(self, job_id: str) -> None:
        self._idle.add(job_id)
        self._on_free()

    def take_back(self, job_id: str) -> Deferred:
        if job_id not in self._idle:
            return succeed(None)
        taken = Deferred(canceller=self._forget)
        self._waiting.append((job_id, taken))
        self._on_free()  # hands it out at once if a slot is free
        return taken

    def _forget(self, taken: Deferred) -> None:  # a cancelled wait
        self._waiting = [(job_id, d) for job_id, d in self._waiting if d is not taken]

    def of(self, job_id: str) -> "JobSlot":
        return JobSlot(self, job_id)


class JobSlot:
    """One job's slot, as the pipeline uses it."""

    def __init__(self, slots: WorkerSlots, job_id: str):
        self._slots = slots
        self._job_id = job_id

    def give_back(self) -> None:
        """The job waits (between warm passes): its slot may run another job meanwhile."""
        self._slots.give_back(self._job_id)

    def take_back(self) -> Deferred:
        """Fires once the job holds a slot again (at once if one is free)."""
        return self._slots.take_back(self._job_id)


class HeldSlot:
    """A slot that is never given back (a run with no job manager: tests, tools)."""

    def give_back(self) -> None:
        pass

    def take_back(self) -> Deferred:
        return succeed(None)
