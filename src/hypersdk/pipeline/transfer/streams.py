"""How many datastore streams run at once: ``limits.streams_per_vcenter`` across every job of every
node sharing the database.

A disk asks for ``pipeline.streams_per_disk`` streams and gets as many as its vCenter has free (at
least one); when none is free it waits. On this node the disks waiting for a vCenter go first come
first served; the grants themselves are kept in the database (``store/streams.py``), so the nodes
of a cluster share one limit. A node learns of another node's release by asking again every
``POLL_SECONDS``, and of its own at once.
"""

from __future__ import annotations

import uuid
from collections import deque

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ...store import streams as grants

POLL_SECONDS = 0.5


class StreamPool:
    log = Logger()

    def __init__(self, store, clock, per_vcenter: int):
        """``store``: the JobStore (its engine keeps the grants; it names this node's instance)."""
        self._store = store
        self._clock = clock
        self._limit = per_vcenter
        self._turns: dict[str, deque] = {}  # the disks of this node waiting for a vCenter, in order
        self._released: dict[str, Deferred] = {}  # fires when this node gives streams of a vCenter back

    def for_job(self, job_id: str) -> "JobStreams":
        return JobStreams(self, job_id)

    async def acquire(self, job_id: str, vcenter: str, wanted: int) -> tuple[str, int]:
        """(grant id, streams >= 1) once the vCenter has streams free; cancelling a wait leaves the line."""
        turns = self._turns.setdefault(vcenter, deque())
        turn: Deferred = Deferred()
        turns.append(turn)
        if turns[0] is turn:
            turn.callback(None)
        try:
            await turn
            grant_id = uuid.uuid4().hex
            while True:
                granted = await self._store.run_with_db_durable(grants.thd_grant, self._store.node, grant_id, job_id,
                                                                vcenter, wanted, self._limit)
                if granted:
                    return grant_id, granted
                await self._release_or_poll(vcenter)
        finally:
            turns.remove(turn)
            if turns and not turns[0].called:
                turns[0].callback(None)

    def release(self, vcenter: str, grant_id: str) -> Deferred:
        d = self._store.run_with_db_durable(grants.thd_release, grant_id)
        d.addErrback(lambda f: self.log.warn("could not give back datastore streams: {error}",
                                             error=f.getErrorMessage()))  # (uncounted once its job ends)
        d.addBoth(lambda _: self._wake(vcenter))
        return d

    def in_use(self, vcenter: str) -> Deferred:
        return self._store.run_with_db(grants.thd_in_use, vcenter)

    def _wake(self, vcenter: str) -> None:
        released = self._released.pop(vcenter, None)
        if released is not None and not released.called:
            released.callback(None)

    def _release_or_poll(self, vcenter: str) -> Deferred:
        released = self._released.get(vcenter)
        if released is None or released.called:
            released = self._released[vcenter] = Deferred()
        waiting: Deferred = Deferred()
        timer = self._clock.callLater(POLL_SECONDS, lambda: waiting.called or waiting.callback(None))
        released.addBoth(lambda _: waiting.called or waiting.callback(None))

        def done(result):
            if timer.active():
                timer.cancel()
            return result
        return waiting.addBoth(done)


class JobStreams:
    """A job's side of the pool, as its copier asks for streams and gives them back."""

    def __init__(self, pool: StreamPool, job_id: str):
        self._pool = pool
        self._job_id = job_id
        self._grants: list[tuple[str, int, str]] = []  # (vcenter, streams, grant id)

    async def acquire(self, vcenter: str, wanted: int) -> int:
        grant_id, streams = await self._pool.acquire(self._job_id, vcenter, wanted)
        self._grants.append((vcenter, streams, grant_id))
        return streams

    def release(self, vcenter: str, streams: int) -> None:
        """Give back a grant of ``streams`` streams of ``vcenter`` (any such grant of this job: they are alike)."""
        for grant in self._grants:
            if grant[:2] == (vcenter, streams):
                self._grants.remove(grant)
                self._pool.release(vcenter, grant[2])
                return
