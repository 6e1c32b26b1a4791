"""A running job's progress, written to the store without flooding it.

A stage change comes with a history line: each is stored, in its own write (through an outage of
the database too). The figures alone change several times a second: one write at a time per job,
and the latest figures next (those in between were never worth storing).
"""

from __future__ import annotations

from typing import Optional

from attrs import define
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .model import Progress


@define
class _Pending:
    latest: Optional[tuple[Progress, float]] = None  # not stored yet
    writing: bool = False


class ProgressWriter:
    log = Logger()

    def __init__(self, store):
        self._store = store
        self._jobs: dict[str, _Pending] = {}

    def write(self, job_id: str, progress: Progress, now: float, note: Optional[str]) -> None:
        if note:
            self._save(job_id, progress, now, note)
            return
        pending = self._jobs.setdefault(job_id, _Pending())
        pending.latest = (progress, now)
        if not pending.writing:
            self._next(job_id, pending)

    def _next(self, job_id: str, pending: _Pending) -> None:
        if pending.latest is None:
            pending.writing = False
            if self._jobs.get(job_id) is pending:
                del self._jobs[job_id]
            return
        (progress, now), pending.latest = pending.latest, None
        pending.writing = True
        self._save(job_id, progress, now, None).addBoth(lambda _: self._next(job_id, pending))

    def _save(self, job_id: str, progress: Progress, now: float, note: Optional[str]) -> Deferred:
        return self._store.save_progress(job_id, progress, now, note).addErrback(
            lambda f: self.log.failure("could not store progress of job {job_id}", f, job_id=job_id))
