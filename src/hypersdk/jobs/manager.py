"""The job manager: FIFO queue, bounded concurrency, cancel, restart recovery.

The queue lives in the store (the oldest pending job is claimed when a worker
slot frees), so nothing but the running jobs is held in memory and pending jobs
survive a restart. Each running job is one Deferred; cancelling it cancels the
pipeline stage it is in, and the job ends only once that stage has cleaned up.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Optional, Protocol, Sequence

from attrs import define, evolve, field
from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredLock
from twisted.logger import Logger

from .. import events
from ..cancel import within
from ..errors import Conflict, HyperSDKError, JobLost, JobNotFound, SecretsUnreadable, Unavailable
from ..events import Event, EventBus
from ..store.base import JobStore
from .definition import JobSpec, SubmitContext, parse_definition, secrets_of, spec_to_definition, with_secrets
from .model import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, STATUSES, Job, NewJob, Progress, vcenter_key
from .elsewhere import running_elsewhere, until_ended, why_not_cancellable
from .progress import ProgressReporter
from .progress_writes import ProgressWriter
from .slots import JobSlot, WorkerSlots

# A job interrupted in these stages goes back to the queue and resumes from its checkpoints.
RESUMABLE_STAGES = ("precopy", "conversion", "verification")
# How long a cancel request waits for running jobs to clean up before answering.
CANCEL_WAIT_SECONDS = 10.0
# How long stopping waits for running jobs to clean up (twistd must exit within 30 s).
STOP_WAIT_SECONDS = 20.0


class Pipeline(Protocol):
    def run(self, spec: JobSpec, job_id: str, reporter: ProgressReporter, slot: JobSlot) -> Deferred:
        """Migrate; fire with the result dict. Cancelling must stop and clean up. A job that waits for
        long (between warm passes) gives its worker ``slot`` back meanwhile."""

    async def preflight(self, spec: JobSpec) -> None:
        """Raise InvalidField for a job that cannot succeed, when that is cheap to know at submit."""

    async def clean_up(self, job_id: str, kept_too: bool = False) -> list[dict]:
        """Remove what an ended job still has (with ``kept_too``, what it kept on purpose): what was removed."""

    async def sweep_work_dirs(self, in_use) -> list[str]:
        """Remove the work directories of jobs ``in_use`` says are done with them."""

    def cutover(self, job_id: str) -> bool:
        """A warm job in precopy starts its cutover now; False if it is not in precopy here."""

    def suspend(self, job_id: str, why: str, then: str = "") -> None:
        """The job is being stopped for ``why`` (the daemon stops, the node fenced itself or lost the
        job): keep what can be resumed (the run then ends with a ``requeue`` error saying ``why: then``,
        ``then`` saying how it resumes)."""


@define
class _Run:
    job: Job
    reporter: Optional[ProgressReporter] = None
    deferred: Optional[Deferred] = None
    cancel_reason: Optional[str] = None  # "user" or "shutdown"
    finishing: bool = False  # the outcome is being stored: too late to cancel
    waiters: list = field(factory=list)

    def when_done(self) -> Deferred:
        d = Deferred()
        self.waiters.append(d)
        return d


class JobManager:
    log = Logger()

    def __init__(self, store: JobStore, pipeline: Pipeline, clock, bus: EventBus, worker_count: int,
                 context: SubmitContext = SubmitContext(), jobs_per_vcenter: Optional[int] = None,
                 cancel_elsewhere: Optional[Callable[[str], None]] = None):
        self._store = store
        self._pipeline = pipeline
        self._clock = clock
        self._bus = bus
        self._slots = WorkerSlots(worker_count, self._fill)
        self._context = context
        self._jobs_per_vcenter = jobs_per_vcenter  # beyond it, a vCenter's jobs wait in the queue
        self._cancel_elsewhere = cancel_elsewhere  # asks the other nodes to cancel a job they run
        self._running: dict[str, _Run] = {}
        self._progress_writes = ProgressWriter(store)
        self._counts = dict.fromkeys(STATUSES, 0)
        self._stopping = False
        self._paused: Optional[str] = None  # why this node takes no more jobs, for good
        self._fenced: Optional[str] = None  # why it takes none until its lease is renewed
        self._outcomes_unstorable: Optional[Deferred] = None  # stopping: fires when waiting is pointless
        self._filling = False
        self._fill_again = False
        # A claim and the orphan sweep take turns: a sweep reading the store between a claim's commit
        # and the job's start would send the job just claimed back to the queue.
        self._claims = DeferredLock()

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Fail what a previous process left running, then start pending jobs."""
        requeued, failed = await self._store.fail_interrupted(self._clock.seconds(), RESUMABLE_STAGES)
        for job in requeued:
            self.log.info("job {job_id} was interrupted by a restart: it resumes from its checkpoints", job_id=job.id)
        for job in failed:
            self.log.warn("job {job_id} was interrupted by a restart", job_id=job.id)
            self._publish(events.JOB_FAILED, job)
        self._counts = await self._store.counts()
        self._fill()

    async def stop(self) -> None:
        """Accept no more jobs; interrupt running ones and wait for them to clean up."""
        self._stopping = True
        waits = [run.when_done() for run in self._running.values()]
        for run in list(self._running.values()):
            self._pipeline.suspend(run.job.id, f"the daemon stopped during {run.reporter.stage}",
                                   "resumes at its next start")
            self._cancel_run(run, "shutdown")
        if waits:
            self._outcomes_unstorable = Deferred()
            self._give_up_if_unstorable()
            either = DeferredList([DeferredList(waits), self._outcomes_unstorable], fireOnOneCallback=True)
            await within(self._clock, either, STOP_WAIT_SECONDS)

    def _give_up_if_unstorable(self) -> None:
        """Stopping while fenced: once every interrupted job has stopped its work, waiting for the
        database to take their outcomes is pointless (they are settled at the next start, or by the
        node that takes them over)."""
        waiting = self._outcomes_unstorable
        if (waiting is not None and not waiting.called and self._fenced
                and all(run.finishing for run in self._running.values())):
            self.log.warn("the database cannot be reached: {count} interrupted job(s) stop without their outcome"
                          " stored", count=len(self._running))
            waiting.callback(None)

    # -- the cluster -----------------------------------------------------------

    def running_ids(self) -> list[str]:
        return list(self._running)

    def lose(self, job_ids: Sequence[str]) -> None:
        """Another node has taken these jobs over (this one lost its lease): stop them here, keeping
        what they wrote. Their outcome is not stored: the store refuses this instance's writes."""
        for job_id in job_ids:
            run = self._running.get(job_id)
            if run is not None:
                self.log.warn("job {job_id} was taken over by another node: stopping it here", job_id=job_id)
                self._pipeline.suspend(job_id, "taken over by another node")
                self._cancel_run(run, "lost")

    def took_over(self, settled: Sequence[tuple[Job, bool]]) -> None:
        """Jobs of a lost node, settled by this one: requeued to resume, or failed."""
        for job, requeued in settled:
            self.log.warn("job {job_id}: {note}", job_id=job.id,
                          note=job.error or "its node was lost: it resumes from its checkpoints")
            self._publish(events.JOB_PROGRESS if requeued else events.JOB_FAILED, job)
        self._fill()

    def pause(self, reason: str) -> None:
        self._paused = reason

    def fence(self, reason: str) -> None:
        """This node cannot renew its lease: stop its copies now, keeping their files to resume (on
        this node or the one that takes them over), and claim nothing until ``unfence``. Jobs in
        other stages go on; the pipeline confirms ownership before each side effect."""
        self._fenced = reason
        for run in list(self._running.values()):
            if run.reporter.stage in RESUMABLE_STAGES:
                self._pipeline.suspend(run.job.id, f"stopped during {run.reporter.stage}: {reason}",
                                       "resumes from its checkpoints")
                self._cancel_run(run, "fenced")
        self._give_up_if_unstorable()

    def unfence(self) -> None:
        self._fenced = None
        self._fill()

    async def requeue_orphans(self) -> None:
        """Jobs the store says this instance runs but it never started (a claim whose answer was lost)
        go back to the queue; not while a claim is under way (its job is this instance's already)."""
        if self._filling:
            return
        await self._claims.acquire()
        try:
            orphans = await self._store.requeue_orphans(list(self._running), self._clock.seconds())
        finally:
            self._claims.release()
        for job in orphans:
            self.log.warn("job {job_id} was claimed by this node but never started: back to the queue", job_id=job.id)
            self._publish(events.JOB_PROGRESS, job)

    async def refresh_counts(self) -> None:
        """The job counts of the whole cluster (other nodes move jobs too)."""
        self._counts = await self._store.counts()
        self._fill()  # jobs another node queued or freed may wait

    # -- reads ---------------------------------------------------------------

    def status(self) -> dict[str, int]:
        c = self._counts
        return {
            "total_jobs": sum(c.values()),
            "running_jobs": c[RUNNING],
            "completed_jobs": c[COMPLETED],
            "failed_jobs": c[FAILED],
            "worker_count": self._slots.count,
            "active_workers": self._slots.busy(self._running),  # (not warm jobs between passes)
            "pending_jobs": c[PENDING],
            "cancelled_jobs": c[CANCELLED],
        }

    def counts(self) -> dict[str, int]:
        """Jobs per status, every status present."""
        return dict(self._counts)

    async def get(self, job_id: str) -> Optional[Job]:
        run = self._running.get(job_id)  # fresher than the stored, throttled progress
        return run.job if run else await self._store.get(job_id)

    async def query(self, statuses, job_ids, limit: int, offset: int) -> tuple[list[Job], int]:
        if job_ids is not None:
            return await self._store.query(statuses, job_ids, limit, offset)
        # The counts this manager keeps spare the store a scan of the status index.
        jobs, _ = await self._store.query(statuses, None, limit, offset, count=False)
        return jobs, sum(self._counts[s] for s in (statuses or STATUSES))

    def history(self, job_id: str) -> Deferred:
        return self._store.history(job_id)

    # -- submit ----------------------------------------------------------------

    def validate(self, definitions: Sequence[Any]) -> list[JobSpec]:
        """Parse every definition; InvalidField names the first bad field."""
        return [parse_definition(d, self._context) for d in definitions]

    async def submit(self, specs: Sequence[JobSpec]) -> list[Job]:
        if self._stopping:
            raise Unavailable("the daemon is stopping and accepts no new jobs")
        for spec in specs:
            await self._pipeline.preflight(spec)
        now = self._clock.seconds()
        new_jobs = []
        for spec in specs:
            job_id = spec.id or str(uuid.uuid4())
            definition = {**spec_to_definition(spec), "id": job_id}
            new_jobs.append(NewJob(id=job_id, definition=definition, secrets=secrets_of(spec), created_at=now,
                                   vcenter_key=vcenter_key(spec.source, self._context.vcenter_urls)))
        await self._store.insert(new_jobs)
        self._counts[PENDING] += len(new_jobs)
        jobs = [
            Job(id=n.id, definition=n.definition, status=PENDING, progress=Progress(), created_at=now, updated_at=now,
                vcenter_key=n.vcenter_key)
            for n in new_jobs
        ]
        for job in jobs:
            self.log.info("job {job_id} submitted for {vm}", job_id=job.id, vm=job.definition["vm_path"])
            self._publish(events.JOB_SUBMITTED, job)
        self._fill()
        return jobs

    # -- cancel ----------------------------------------------------------------

    async def cancel(self, job_ids: Sequence[str], statuses: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """Cancel the named jobs and every active job in ``statuses``.

        Returns (cancelled ids, {id: why not}) once running jobs have stopped.
        Pending jobs are cancelled in one store transaction, however many.
        """
        named = list(dict.fromkeys(job_ids))
        running = [i for i in self._running if RUNNING in statuses or i in named]
        elsewhere = [] if self._cancel_elsewhere is None else await running_elsewhere(
            self._store, self._running, named if RUNNING not in statuses else None)
        # Pending first: a slot freed by a cancelled running job must not start one of them.
        named_idle = [i for i in named if i not in running]
        pending = await self._store.cancel_pending(None if PENDING in statuses else named_idle, self._clock.seconds())
        for job in pending:
            self._moved(PENDING, CANCELLED)
            self._publish(events.JOB_CANCELLED, job)
        cancelled = [job.id for job in pending]
        waits: dict[str, Deferred] = {}
        errors: dict[str, str] = {}
        for job_id in dict.fromkeys(running + named + elsewhere):
            if job_id in cancelled:
                continue
            if job_id in self._running:  # still running, or claimed meanwhile
                waits[job_id] = self._request_cancel(job_id)
            elif job_id in elsewhere and self._cancel_elsewhere is not None:
                self._cancel_elsewhere(job_id)
                waits[job_id] = Deferred.fromCoroutine(
                    until_ended(self._store, self._clock, job_id, CANCEL_WAIT_SECONDS))
            elif job_id in named:
                errors[job_id] = await why_not_cancellable(self._store, job_id)
        if waits:
            await within(self._clock, DeferredList(list(waits.values())), CANCEL_WAIT_SECONDS)
        for job_id, wait in waits.items():
            final = wait.result if wait.called else None
            if final == CANCELLED:
                cancelled.append(job_id)
            else:
                errors[job_id] = f"job {final} before it could be cancelled" if final else "cancel requested; the job is still stopping"
        return cancelled, errors

    def cancel_here(self, job_id: str) -> None:
        """Another node asks: cancel this job if it runs here."""
        run = self._running.get(job_id)
        if run is not None:
            self._cancel_run(run, "user")

    def _request_cancel(self, job_id: str) -> Deferred:
        run = self._running[job_id]
        wait = run.when_done()
        self._cancel_run(run, "user")
        return wait

    def _cancel_run(self, run: _Run, reason: str) -> None:
        if run.cancel_reason is None and not run.finishing:
            run.cancel_reason = reason
            self.log.info("cancelling job {job_id} ({reason})", job_id=run.job.id, reason=reason)
            if run.deferred is not None:
                run.deferred.cancel()

    # -- running ---------------------------------------------------------------

    def _fill(self) -> None:
        """Give free worker slots to warm jobs waiting for their next pass, then start pending jobs
        while slots are free (one loop at a time)."""
        self._slots.hand_out(self._running)
        if self._filling:
            self._fill_again = True
            return
        self._filling = True
        Deferred.fromCoroutine(self._fill_loop()).addErrback(self._fill_failed)

    def _fill_failed(self, failure) -> None:
        if failure.check(Unavailable):  # the database is out of reach: the next heartbeat fills again
            self.log.warn("could not start pending jobs: {error}", error=failure.value.message)
        else:
            self.log.failure("could not start pending jobs", failure)

    async def _fill_loop(self) -> None:
        await self._claims.acquire()
        try:
            while True:
                self._fill_again = False
                while (not self._stopping and not self._paused and not self._fenced
                       and self._slots.free(self._running) > 0):
                    with self._slots.claiming():  # (a warm job taking its slot back meanwhile finds it taken)
                        job = await self._store.claim_next(self._clock.seconds(), self._jobs_per_vcenter)
                    if job is None:
                        break
                    if self._stopping or self._paused or self._fenced or job.id in self._running:
                        await self._give_back(job)  # (it stopped taking jobs while the claim was on its way)
                        break
                    self._start(job)
                if not self._fill_again:
                    break
        finally:
            self._filling = False
            self._claims.release()
            self._slots.hand_out(self._running)  # (a slot a claim held and did not use)

    async def _give_back(self, job: Job) -> None:
        await self._store.requeue(job.id, self._clock.seconds(), (RUNNING,),
                                  "claimed as this node stopped taking jobs: back to the queue")

    def _start(self, job: Job) -> None:
        run = _Run(job=job)
        self._running[job.id] = run
        self._moved(PENDING, RUNNING)
        self.log.info("job {job_id} started", job_id=job.id)
        self._publish(events.JOB_STARTED, job)
        run.reporter = ProgressReporter(job.progress, self._clock.seconds, lambda p, note: self._progressed(run, p, note))
        run.deferred = Deferred.fromCoroutine(self._execute(run))
        run.deferred.addErrback(self._crashed, job.id)

    def _crashed(self, failure, job_id: str) -> None:
        if failure.check(Unavailable):  # stopping while the database cannot be reached
            self.log.warn("job {job_id}: its outcome was not stored: {error}", job_id=job_id,
                          error=failure.value.message)
        else:
            self.log.failure("job {job_id} crashed", failure, job_id=job_id)

    async def _execute(self, run: _Run) -> None:
        job_id = run.job.id
        try:
            secrets = await self._store.secrets(job_id)
            spec = parse_definition(with_secrets(run.job.definition, secrets), self._context)
            result = await self._pipeline.run(spec, job_id, run.reporter, self._slots.of(job_id))
        except CancelledError:
            if run.cancel_reason == "shutdown":
                outcome = (FAILED, f"interrupted: daemon stopped during {run.reporter.stage}", None)
            elif run.cancel_reason == "lost":  # the store refuses this write: the job is another node's
                outcome = (FAILED, "taken over by another node", None)
            elif run.cancel_reason == "fenced":
                outcome = (FAILED, f"{run.reporter.stage}: stopped: {self._fenced or 'this node lost its lease'}", None)
            else:
                outcome = (CANCELLED, None, None)
        except JobLost:  # another node runs it now: nothing of this run is stored
            self._drop(run)
            return
        except SecretsUnreadable as e:  # not the key the job was sealed with: every job would fail here
            error = (f"{run.reporter.stage}: its {e.message}: every node needs the same key file; node"
                     f" {self._store.node.name} takes no more jobs until it is restarted with it")
            self.pause(error)
            self.log.error("job {job_id} failed: {error}", job_id=job_id, error=error)
            outcome = (FAILED, error, None)
        except HyperSDKError as e:  # some failures carry what the job found (a boot check's console)
            if getattr(e, "requeue", False):  # suspended by the daemon's stop: back to the queue
                outcome = (PENDING, e.message, None)
            elif getattr(e, "resumable", False):  # its copy is kept: POST /jobs/{id}/resume goes on from it
                outcome = (FAILED, f"{run.reporter.stage}: {e.message} (resumable: POST /jobs/{job_id}/resume)",
                           {**(getattr(e, "result", None) or {}), "resumable": True})
            else:
                outcome = (FAILED, f"{run.reporter.stage}: {e.message}", getattr(e, "result", None))
        except Exception as e:
            self.log.failure("job {job_id} failed with an unexpected error", job_id=job_id)
            outcome = (FAILED, f"{run.reporter.stage}: internal error: {type(e).__name__}: {e}", None)
        else:
            outcome = (COMPLETED, None, result)
        await self._finish(run, *outcome)

    async def _finish(self, run: _Run, status: str, error: Optional[str], result: Optional[dict]) -> None:
        job_id = run.job.id
        run.finishing = True
        self._give_up_if_unstorable()
        if status == PENDING:
            await self._requeue(run, error)
            return
        progress = run.reporter.progress
        if status == COMPLETED:
            progress = evolve(progress, stage="done", percent_complete=100.0, eta_seconds=0, message="completed")
        try:
            job = await self._store.finish(
                job_id, status, self._clock.seconds(), from_statuses=(RUNNING,), error=error, result=result, progress=progress
            )
        finally:
            del self._running[job_id]
            self._slots.ended(job_id)
            self._moved(RUNNING, status)
            for waiter in run.waiters:
                waiter.callback(status)
            self._fill()
        if job is not None:
            self.log.info("job {job_id} {status}{detail}", job_id=job_id, status=status, error=error,
                          detail=f": {error}" if error else "")
            self._publish({COMPLETED: events.JOB_COMPLETED, FAILED: events.JOB_FAILED}.get(status, events.JOB_CANCELLED), job)

    def _drop(self, run: _Run) -> None:
        """A run whose job another node has taken over: it ends here without a write."""
        self.log.warn("job {job_id} was taken over by another node: this node stopped it", job_id=run.job.id)
        del self._running[run.job.id]  # (it still runs, elsewhere: the cluster's counts are unchanged)
        self._slots.ended(run.job.id)
        self._give_up_if_unstorable()
        for waiter in run.waiters:
            waiter.callback(RUNNING)
        self._fill()

    async def _requeue(self, run: _Run, note: str) -> None:
        job_id = run.job.id
        try:
            await self._store.save_progress(job_id, run.reporter.progress, self._clock.seconds(), None)
            job = await self._store.requeue(job_id, self._clock.seconds(), (RUNNING,), note)
        finally:
            del self._running[job_id]
            self._slots.ended(job_id)
            self._moved(RUNNING, PENDING)
            for waiter in run.waiters:
                waiter.callback(PENDING)
            self._slots.hand_out(self._running)  # (to a warm job waiting for one: this node claims no more now)
        self.log.info("job {job_id}: {note}", job_id=job_id, note=note)
        if job is not None:
            self._publish(events.JOB_PROGRESS, job)

    async def cutover(self, job_id: str) -> Job:
        """A warm job in precopy on this node cuts over now."""
        run = self._running.get(job_id)
        if run is None:
            job = await self._store.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            where = f" on node {job.node}" if job.status == RUNNING and job.node else ""
            raise Conflict(f"job {job_id} is {job.status}{where}, not in precopy here: only a running warm job in"
                           " stage precopy can be cut over (on the node that runs it)")
        if not self._pipeline.cutover(job_id):
            stage = run.reporter.stage
            raise Conflict(f"job {job_id} is in stage {stage}: only a warm job in stage precopy can be cut over"
                           + (" (its cutover has begun)" if stage == "cutover" else ""))
        self.log.info("job {job_id}: cutover requested", job_id=job_id)
        return run.job

    async def resume(self, job_id: str) -> Job:
        """A failed job whose copy was kept goes back to the queue, to go on from its checkpoints."""
        job = await self._store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.status != FAILED or not (job.result or {}).get("resumable"):
            raise Conflict(f"job {job_id} is {job.status}: only a failed job whose copy was kept"
                           " (result.resumable) can be resumed")
        resumed = await self._store.requeue(job_id, self._clock.seconds(), (FAILED,), "resume requested")
        if resumed is None:
            raise Conflict(f"job {job_id} changed meanwhile: try again")
        self._moved(FAILED, PENDING)
        self.log.info("job {job_id} resumed", job_id=job_id)
        self._publish(events.JOB_SUBMITTED, resumed)
        self._fill()
        return resumed

    def _progressed(self, run: _Run, progress: Progress, note: Optional[str]) -> None:
        now = self._clock.seconds()
        cutover = progress.stage == "cutover" and run.job.progress.stage != "cutover"  # (asked, or cutover_at)
        run.job = evolve(run.job, progress=progress, updated_at=now)
        self._progress_writes.write(run.job.id, progress, now, note)
        self._publish(events.JOB_CUTOVER_STARTED if cutover else events.JOB_PROGRESS, run.job)

    # -- bookkeeping -------------------------------------------------------------

    def _moved(self, old: str, new: str) -> None:
        self._counts[old] -= 1
        self._counts[new] += 1

    def _publish(self, event_type: str, job: Job) -> None:
        self._bus.publish(Event(event_type, self._clock.seconds(), job))
