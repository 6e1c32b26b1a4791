"""What ended jobs left outside the database: cleaned up after a crash, discarded on request, swept
after ``pipeline.keep_resumable_for``.

At start, this node's ended jobs that still have leftovers not kept on purpose (a crash came between
making them and removing them) are cleaned up, each with a history line saying what was removed,
and the work directories no job needs any more are removed. ``discard`` removes what a failed job
kept on purpose (its partial copy, a domain that did not boot); every hour, what was kept longer
than ``keep_resumable_for`` is removed the same way.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..errors import Conflict, JobNotFound
from ..jobs.model import CANCELLED, FAILED, PENDING, RUNNING
from ..pipeline.leftovers import Leftover
from ..store.leftovers import LeftoverStore
from ..timefmt import duration

SWEEP_SECONDS = 3600.0  # how often kept copies are looked at (more often when they are kept for less)


class JobLeftovers:
    log = Logger()

    def __init__(self, store, pipeline, clock, keep_resumable_for: float):
        self._store = store
        self._leftovers = LeftoverStore(store)
        self._pipeline = pipeline
        self._clock = clock
        self._keep_for = keep_resumable_for
        self._loop: Optional[LoopingCall] = None

    async def start(self) -> None:
        """After the job manager settled the jobs of an earlier run: clean what they left."""
        for job_id in await self._leftovers.jobs_to_clean():
            removed = await self._pipeline.clean_up(job_id)
            if removed:
                await self._note(job_id, f"cleaned up after the daemon restarted: removed {_listed(removed)}")
        swept = await self._pipeline.sweep_work_dirs(self._needs_work_dir)
        if swept:
            self.log.info("removed the work directories of {count} ended job(s)", count=len(swept))
        self._loop = LoopingCall(self.sweep)
        self._loop.clock = self._clock
        self._loop.start(min(SWEEP_SECONDS, self._keep_for), now=True).addErrback(lambda f: self.log.failure("sweeping kept copies", f))

    async def clean_taken_over(self, job_ids) -> None:
        """Jobs of a lost node this node failed: what they made goes, as after a restart (their node
        confirms ownership before each side effect, so it makes nothing more)."""
        for job_id in job_ids:
            removed = await self._pipeline.clean_up(job_id)
            if removed:
                await self._note(job_id, f"cleaned up after its node was lost: removed {_listed(removed)}")

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    async def discard(self, job_id: str) -> list[dict]:
        """Remove what a failed or cancelled job kept (its copy, a domain that did not boot): what was
        removed. The job can no longer be resumed."""
        job = await self._store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.status not in (FAILED, CANCELLED):
            raise Conflict(f"job {job_id} is {job.status}: only a failed or cancelled job's kept copies can be"
                           " discarded" + (" (cancel it first)" if job.status in (PENDING, RUNNING) else ""))
        removed = await self._pipeline.clean_up(job_id, kept_too=True)
        await self._note(job_id, f"discarded: removed {_listed(removed)}" if removed else "discarded: nothing was kept",
                         resumable=False)
        return removed

    async def sweep(self) -> None:
        """Remove what failed jobs kept longer than ``keep_resumable_for``."""
        for job_id in await self._leftovers.kept_before(self._clock.seconds() - self._keep_for):
            removed = await self._pipeline.clean_up(job_id, kept_too=True)
            await self._note(job_id, f"what it kept was removed {duration(self._keep_for)} after it failed"
                                     f" (pipeline.keep_resumable_for): removed {_listed(removed) or 'nothing'}",
                             resumable=False)

    async def _needs_work_dir(self, job_id: str) -> bool:
        """A job needs its work directory while it runs or waits, and while its copy can be resumed."""
        job = await self._store.get(job_id)
        if job is None:
            return False
        return job.status in (PENDING, RUNNING) or bool((job.result or {}).get("resumable"))

    def _note(self, job_id: str, message: str, resumable: Optional[bool] = None):
        self.log.info("job {job_id}: {message}", job_id=job_id, message=message)
        return self._leftovers.note(job_id, self._clock.seconds(), message, resumable)


def _listed(removed: list[dict]) -> str:
    return ", ".join(Leftover.from_json(what).describe() for what in removed)
