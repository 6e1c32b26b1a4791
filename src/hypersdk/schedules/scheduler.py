"""The scheduler: one timer for the next due schedule, runs that submit jobs, and their outcome.

Schedules live in memory and every change is written through to the store (one
thread, in order, so the database ends where memory is). A run expands the job
template into jobs, submits them and is followed on the event bus until they
have all finished: it succeeds when all completed, fails otherwise. A run is
skipped while the schedule's previous run still has unfinished jobs.
"""

from __future__ import annotations

import uuid
from typing import Any, Awaitable, Callable, Optional

from attrs import define, evolve, field
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .. import events
from ..errors import Conflict, HyperSDKError, InvalidField, NotFound, ScheduleNotFound
from ..events import Event, EventBus
from ..jobs.definition import (
    REDACTED, SourceSpec, SubmitContext, parse_definition, parse_source, secrets_of, spec_to_definition,
    with_secrets,
)
from ..jobs.model import COMPLETED
from .cron import next_fire, parse_timezone
from .definition import DEFAULTS, ScheduleChanges, matching_paths, split_glob
from .model import (
    BY_CATCH_UP, BY_CRON, BY_TRIGGER, CATCH_UP, FAILED, RUNNING, SKIPPED, SUCCEEDED, Schedule, ScheduleEvent,
    ScheduleRun,
)

# (source, folder inventory path) -> the VM paths in that folder
FindVms = Callable[[SourceSpec, str], Awaitable[list[str]]]


class NothingToRun(NotFound):
    code = "no_matching_vm"


@define
class _ActiveRun:
    run: ScheduleRun
    remaining: set[str]
    failed: list[str] = field(factory=list)


class Scheduler:
    log = Logger()

    def __init__(self, store, jobs, clock, bus: EventBus, find_vms: FindVms, context: SubmitContext):
        self._store = store
        self._jobs = jobs  # the JobManager: submit() and get()
        self._clock = clock
        self._bus = bus
        self._find_vms = find_vms
        self._context = context
        self._schedules: dict[str, Schedule] = {}
        self._active: dict[str, _ActiveRun] = {}  # schedule id -> its run with unfinished jobs
        self._run_of_job: dict[str, _ActiveRun] = {}
        self._starting: set[str] = set()  # schedules whose run is submitting its jobs
        self._timer = None
        self._unsubscribe: Optional[Callable[[], None]] = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Load schedules, follow runs left unfinished, make up for runs missed while down, arm the timer."""
        self._unsubscribe = self._bus.subscribe(self._on_event)
        self._schedules = {s.id: s for s in await self._store.load()}
        await self.resume_open_runs()
        now = self._clock.seconds()
        for s in list(self._schedules.values()):
            if not s.enabled:
                continue
            missed = s.next_run is not None and s.next_run <= now
            next_run = _next_run(s, now)
            if missed:
                if not await self._store.claim_due(s.id, s.next_run, next_run):
                    continue  # another node (running, or starting with this one) has it
                s = self._change(s.id, next_run=next_run)  # the claim stored it
            elif next_run != s.next_run:
                s = self._change(s.id, next_run=next_run)
                await self._store.save(s)
            if missed and s.missed_runs == CATCH_UP:
                self.log.info("schedule {schedule_id} missed a run while the daemon was down: running it now",
                              schedule_id=s.id)
                self._launch(s.id, BY_CATCH_UP)
            elif missed:
                await self._record_skip(s.id, BY_CATCH_UP, "missed while the daemon was down (missed_runs: skip)")
        self._arm()

    async def resume_open_runs(self) -> None:
        """Follow the unfinished runs of this node not followed yet (after a restart, or adopted from a
        lost node)."""
        followed = {active.run.id for active in self._active.values()}
        for run in await self._store.open_runs():
            if run.id not in followed:
                await self._resume(run)

    async def reload(self) -> None:
        """Another node changed the schedules: take the stored ones (what this node runs stays)."""
        self._schedules = {s.id: s for s in await self._store.load()}
        self._arm()

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- reads -----------------------------------------------------------------

    def list(self) -> list[Schedule]:
        return sorted(self._schedules.values(), key=lambda s: (s.created_at, s.id))

    def get(self, schedule_id: str) -> Schedule:
        try:
            return self._schedules[schedule_id]
        except KeyError:
            raise ScheduleNotFound(schedule_id) from None

    def runs(self, schedule_id: str) -> Deferred:
        self.get(schedule_id)
        return self._store.runs(schedule_id)

    def stats(self) -> dict[str, int]:
        schedules = self._schedules.values()
        enabled = sum(1 for s in schedules if s.enabled)
        return {
            "total_schedules": len(self._schedules),
            "enabled_schedules": enabled,
            "disabled_schedules": len(self._schedules) - enabled,
            "total_runs": sum(s.run_count for s in schedules),
            "successful_runs": sum(s.succeeded_runs for s in schedules),
            "failed_runs": sum(s.failed_runs for s in schedules),
            "skipped_runs": sum(s.skipped_runs for s in schedules),
            "running_runs": len(self._active),
        }

    # -- changes -----------------------------------------------------------------

    async def create(self, changes: ScheduleChanges) -> Schedule:
        schedule_id = changes.id or str(uuid.uuid4())
        if schedule_id in self._schedules:
            raise Conflict(f"a schedule with id {schedule_id} already exists")
        now = self._clock.seconds()
        values = {k: getattr(changes, k) for k in DEFAULTS if getattr(changes, k) is not None}
        schedule = Schedule(
            **{**DEFAULTS, **values}, id=schedule_id, name=changes.name or schedule_id, cron=changes.cron,
            job_template=spec_to_definition(changes.template), created_at=now, updated_at=now,
        )
        schedule = evolve(schedule, next_run=_next_run(schedule, now))
        self._schedules[schedule_id] = schedule  # claims the id while the insert runs
        try:
            await self._store.insert(schedule, secrets_of(changes.template))
        except BaseException:
            self._schedules.pop(schedule_id, None)
            raise
        self.log.info("schedule {schedule_id} created: {cron} ({timezone})", schedule_id=schedule_id,
                      cron=schedule.cron, timezone=schedule.timezone)
        self._arm()
        return schedule

    async def update(self, schedule_id: str, changes: ScheduleChanges) -> Schedule:
        self.get(schedule_id)
        secrets = None  # unchanged
        if changes.template is not None:
            secrets = secrets_of(changes.template)
            if changes.template.source.password == REDACTED:  # sent back as GET shows it: keep the stored one
                secrets = None
                _same_login(self.get(schedule_id).job_template, changes.template)
                if "source.password" not in await self._store.secrets(schedule_id):
                    raise InvalidField("job_template.source.password", f"is {REDACTED!r} but none is stored")
                self.get(schedule_id)  # still there after the wait
        values = {k: getattr(changes, k) for k in ("name", "description", "cron", "timezone", "enabled", "missed_runs")
                  if getattr(changes, k) is not None}
        if changes.template is not None:
            values["job_template"] = spec_to_definition(changes.template)
        return await self._save(schedule_id, values, secrets)

    async def set_enabled(self, schedule_id: str, enabled: bool) -> Schedule:
        self.get(schedule_id)
        return await self._save(schedule_id, {"enabled": enabled})

    async def delete(self, schedule_id: str) -> None:
        self.get(schedule_id)
        del self._schedules[schedule_id]
        active = self._active.pop(schedule_id, None)
        for job_id in active.remaining if active else ():
            self._run_of_job.pop(job_id, None)
        await self._store.delete(schedule_id)
        self.log.info("schedule {schedule_id} deleted", schedule_id=schedule_id)
        self._arm()

    async def trigger(self, schedule_id: str) -> ScheduleRun:
        """Run now, even when disabled. Conflict while the previous run has unfinished jobs;
        the error that stopped the run when it could not submit its jobs."""
        self.get(schedule_id)
        return await self._run(schedule_id, BY_TRIGGER, raise_errors=True)

    async def _save(self, schedule_id: str, values: dict[str, Any], secrets=None) -> Schedule:
        self.get(schedule_id)
        now = self._clock.seconds()
        schedule = evolve(self._schedules[schedule_id], **values, updated_at=now)
        schedule = self._change(schedule_id, **values, updated_at=now, next_run=_next_run(schedule, now))
        await self._store.save(schedule, secrets)
        self._arm()
        return schedule

    def _change(self, schedule_id: str, **values) -> Schedule:
        """The schedule with ``values``, now the one in memory (the caller writes it through)."""
        schedule = evolve(self._schedules[schedule_id], **values)
        self._schedules[schedule_id] = schedule
        return schedule

    # -- the timer -----------------------------------------------------------------

    def _arm(self) -> None:
        """One timer, for the earliest next_run of the enabled schedules."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        due = [s.next_run for s in self._schedules.values() if s.enabled and s.next_run is not None]
        if due and self._unsubscribe is not None:
            self._timer = self._clock.callLater(max(0.0, min(due) - self._clock.seconds()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        for s in list(self._schedules.values()):
            if s.enabled and s.next_run is not None and s.next_run <= now:
                # From now, not from the due time: a late timer makes one run, not a burst.
                self._change(s.id, next_run=_next_run(s, now))
                self._launch(s.id, BY_CRON, due=s.next_run)
        self._arm()

    def _launch(self, schedule_id: str, trigger: str, due: Optional[float] = None) -> None:
        """Run, once the store says this node is the one to (``due``: the time a timer fired for)."""
        d = Deferred.fromCoroutine(self._run_if_claimed(schedule_id, trigger, due))
        d.addErrback(lambda f: self.log.failure("schedule {schedule_id}: run failed", f, schedule_id=schedule_id))

    async def _run_if_claimed(self, schedule_id: str, trigger: str, due: Optional[float]) -> None:
        if due is not None and schedule_id in self._schedules:
            if not await self._store.claim_due(schedule_id, due, self._schedules[schedule_id].next_run):
                return  # another node runs it
        if schedule_id in self._schedules:
            await self._run(schedule_id, trigger)

    # -- runs ------------------------------------------------------------------------

    async def _run(self, schedule_id: str, trigger: str, raise_errors: bool = False) -> ScheduleRun:
        busy = self._busy(schedule_id)
        if busy:
            run = await self._record_skip(schedule_id, trigger, busy)
            if raise_errors:
                raise Conflict(f"schedule {schedule_id} was not run: {busy}")
            return run
        self._starting.add(schedule_id)
        now = self._clock.seconds()
        try:
            try:
                jobs = await self._submit(self._schedules[schedule_id])
            except Exception as e:
                if not isinstance(e, HyperSDKError):
                    self.log.failure("schedule {schedule_id}: run failed", schedule_id=schedule_id)
                reason = e.message if isinstance(e, HyperSDKError) else "internal error (logged)"
                run = await self._record_failed_start(schedule_id, trigger, now, reason)
                if raise_errors:
                    raise
                return run
            job_ids = tuple(job.id for job in jobs)
            if schedule_id not in self._schedules:  # deleted meanwhile: the jobs go on, unrecorded
                return ScheduleRun(schedule_id, trigger, now, RUNNING, job_ids)
            active = _ActiveRun(ScheduleRun(schedule_id, trigger, now, RUNNING, job_ids), set(job_ids))
            self._follow(active)
            schedule = self._change(schedule_id, last_run=now, run_count=self._schedules[schedule_id].run_count + 1,
                                    last_job_ids=job_ids)
            try:
                active.run = await self._store.record_run(active.run, schedule)
            except BaseException:
                self._unfollow(active)  # else the schedule would stay "busy" with a run nobody can finish
                raise
        finally:
            self._starting.discard(schedule_id)
        self.log.info("schedule {schedule_id} ran ({trigger}): {count} job(s)", schedule_id=schedule_id,
                      trigger=trigger, count=len(job_ids))
        self._publish(schedule_id, "triggered", job_ids, active.run.id)
        if not active.remaining:  # every job ended before the run was recorded
            await self._finish(active)
        return active.run

    def _busy(self, schedule_id: str) -> Optional[str]:
        if schedule_id in self._starting:
            return "its previous run is still submitting jobs"
        active = self._active.get(schedule_id)
        if active is not None:
            return f"its previous run still has {len(active.remaining)} pending or running job(s)"
        return None

    async def _submit(self, schedule: Schedule) -> list:
        secrets = await self._store.secrets(schedule.id)
        template = with_secrets(schedule.job_template, secrets)
        folder, pattern = split_glob(template["vm_path"])
        paths = [template["vm_path"]]
        if pattern is not None:
            source = parse_source(template["source"], self._context, "job_template.source")
            paths = matching_paths(template["vm_path"], await self._find_vms(source, folder))
            if not paths:
                raise NothingToRun(f"no VM in {folder} matches {pattern!r}")
        metadata = {**template.get("metadata", {}), "schedule_id": schedule.id}
        specs = [
            parse_definition({**template, "vm_path": path, "name": template.get("name") or schedule.name,
                              "metadata": metadata}, self._context)
            for path in paths
        ]
        return await self._jobs.submit(specs)

    def _follow(self, active: _ActiveRun) -> None:
        self._active[active.run.schedule_id] = active
        for job_id in active.remaining:
            self._run_of_job[job_id] = active

    def _unfollow(self, active: _ActiveRun) -> None:
        if self._active.get(active.run.schedule_id) is active:
            del self._active[active.run.schedule_id]
        for job_id in active.remaining:
            self._run_of_job.pop(job_id, None)

    def _on_event(self, event: Event) -> None:
        if event.type not in events.JOB_ENDED:
            return
        job = event.subject
        active = self._run_of_job.pop(job.id, None)
        if active is None:
            return
        active.remaining.discard(job.id)
        if job.status != COMPLETED:
            active.failed.append(job.id)
        if not active.remaining and active.run.id is not None:
            d = Deferred.fromCoroutine(self._finish(active))
            d.addErrback(lambda f: self.log.failure("schedule {schedule_id}: recording the run's outcome failed", f,
                                                    schedule_id=active.run.schedule_id))

    async def _finish(self, active: _ActiveRun) -> None:
        schedule_id = active.run.schedule_id
        if self._active.get(schedule_id) is active:
            del self._active[schedule_id]
        if schedule_id not in self._schedules:
            return
        total = len(active.run.job_ids)
        if active.failed:
            outcome, reason = FAILED, f"{len(active.failed)} of {total} job(s) did not complete: {', '.join(active.failed)}"
        else:
            outcome, reason = SUCCEEDED, None
        counter = "failed_runs" if active.failed else "succeeded_runs"
        schedule = self._change(schedule_id, **{counter: getattr(self._schedules[schedule_id], counter) + 1})
        run = evolve(active.run, outcome=outcome, reason=reason, finished_at=self._clock.seconds())
        active.run = await self._store.record_run(run, schedule)
        self.log.info("schedule {schedule_id}: run {outcome}", schedule_id=schedule_id, outcome=outcome)
        self._publish(schedule_id, "completed" if outcome == SUCCEEDED else "failed", run.job_ids, run.id, reason)

    async def _resume(self, run: ScheduleRun) -> None:
        """Follow a run a previous process left unfinished: its jobs may have ended since, or end
        while we look (the job manager runs already), so follow first, then settle what has ended."""
        active = _ActiveRun(run, set(run.job_ids))
        self._follow(active)
        for job_id in run.job_ids:
            job = await self._jobs.get(job_id)
            if (job is None or job.status not in ("pending", "running")) and job_id in active.remaining:
                self._run_of_job.pop(job_id, None)
                active.remaining.discard(job_id)
                if job is None or job.status != COMPLETED:
                    active.failed.append(job_id)
        if not active.remaining and self._active.get(run.schedule_id) is active:
            await self._finish(active)

    async def _record_skip(self, schedule_id: str, trigger: str, reason: str) -> ScheduleRun:
        now = self._clock.seconds()
        self.log.warn("schedule {schedule_id}: run skipped: {reason}", schedule_id=schedule_id, reason=reason)
        schedule = self._change(schedule_id, skipped_runs=self._schedules[schedule_id].skipped_runs + 1)
        return await self._store.record_run(
            ScheduleRun(schedule_id, trigger, now, SKIPPED, reason=reason, finished_at=now), schedule)

    async def _record_failed_start(self, schedule_id: str, trigger: str, now: float, reason: str) -> ScheduleRun:
        self.log.warn("schedule {schedule_id}: run failed: {reason}", schedule_id=schedule_id, reason=reason)
        if schedule_id not in self._schedules:
            return ScheduleRun(schedule_id, trigger, now, FAILED, reason=reason, finished_at=now)
        s = self._schedules[schedule_id]
        schedule = self._change(schedule_id, last_run=now, run_count=s.run_count + 1, failed_runs=s.failed_runs + 1,
                                last_job_ids=())
        run = await self._store.record_run(
            ScheduleRun(schedule_id, trigger, now, FAILED, reason=reason, finished_at=self._clock.seconds()), schedule)
        self._publish(schedule_id, "triggered", (), run.id)
        self._publish(schedule_id, "failed", (), run.id, reason)
        return run

    def _publish(self, schedule_id: str, event: str, job_ids, run_id, reason: Optional[str] = None) -> None:
        subject = ScheduleEvent(schedule_id, event, tuple(job_ids), run_id, reason)
        self._bus.publish(Event(events.SCHEDULE_EVENTS[event], self._clock.seconds(), subject))


def _same_login(stored: dict[str, Any], template) -> None:
    """The stored password is kept only for the vCenter and user it was given for: a template that
    points elsewhere must bring its own, or anyone allowed to edit could send it to their own host."""
    before = stored.get("source", {})
    after = template.source
    if (before.get("vcenter_url"), before.get("vcenter"), before.get("username")) != \
            (after.vcenter_url, after.vcenter, after.username):
        raise InvalidField("job_template.source.password",
                           f"is {REDACTED!r}, but vcenter_url, vcenter or username changed: send the password")


def _next_run(schedule: Schedule, now: float) -> Optional[float]:
    if not schedule.enabled:
        return None
    return next_fire(schedule.cron, parse_timezone(schedule.timezone), now)
