"""A pipeline whose jobs the test finishes by hand, behind the real interface."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater

from hypersdk.pipeline.migration import Suspended


class ScriptedRun:
    def __init__(self, spec, job_id, reporter, clock, cleanup_seconds):
        self.spec, self.job_id, self.reporter = spec, job_id, reporter
        self.cancelled = False
        self.resumable = False  # a copy with checkpoints: stopped from outside, it is kept to resume
        self.suspended = None  # why it was stopped from outside
        self.cleaned_up = False
        self._clock = clock
        self._cleanup_seconds = cleanup_seconds
        self._outcome: Deferred = Deferred()
        self.deferred = Deferred.fromCoroutine(self._work())

    async def _work(self):
        # Like a real stage: on cancel, stop the work and clean up (which may
        # take a while); only then does the cancellation reach the manager.
        try:
            return await self._outcome
        except CancelledError:
            self.cancelled = True
            if self._cleanup_seconds:
                await deferLater(self._clock, self._cleanup_seconds, lambda: None)
            if self.suspended is not None and self.resumable:
                raise Suspended(self.suspended) from None
            self.cleaned_up = True
            raise

    def complete(self, result=None):
        self._outcome.callback(result or {"domain_name": "vm"})

    def fail(self, error):
        self._outcome.errback(error)


class ScriptedPipeline:
    """Every run waits until the test calls complete()/fail() on it."""

    def __init__(self, clock, cleanup_seconds=0.0):
        self.runs: dict[str, ScriptedRun] = {}
        self.started: list[str] = []
        self._clock = clock
        self._cleanup_seconds = cleanup_seconds

    def method_problem(self, method):
        return None

    def inspection_problem(self):
        return None

    def suspend(self, job_id, why, then=""):
        if job_id in self.runs:
            self.runs[job_id].suspended = f"{why}: {then}" if then else why

    async def preflight(self, spec):
        self.preflighted = getattr(self, "preflighted", []) + [spec.vm_path]

    def start(self):
        pass

    def stop(self):
        pass

    def run(self, spec, job_id, reporter, slot):
        reporter.stage_started("connecting")
        run = ScriptedRun(spec, job_id, reporter, self._clock, self._cleanup_seconds)
        run.slot = slot  # the test gives it back and takes it again as a warm job between passes does
        self.runs[job_id] = run
        self.started.append(job_id)
        return run.deferred
