"""A warm job's timeline: passes while the source runs, the cutover, and the rollback.

Passes run at once, then every ``precopy_interval``, until ``cutover_at`` or a cutover request (POST
/jobs/{id}/cutover). The cutover shuts the guest down (bounded by pipeline.shutdown_timeout; powered
off only with ``force_off``), and the final pass copies what changed since the last one. From the
moment the source is switched off until the target is up, a failure powers the source on again:
the job fails ``rolled back: <cause>; source <vm> powered on again``.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Optional, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from ..errors import HyperSDKError, UpstreamTimeout
from ..jobs.definition import WarmOption
from ..timefmt import rfc3339
from ..pipeline.leftovers import Leftover
from .precopy import Pass, Precopy

POWER_ON_SECONDS = 300.0


class RolledBack(HyperSDKError):
    code = "rolled_back"

    def __init__(self, message: str, cause: Optional[BaseException] = None, powered_on: bool = True):
        super().__init__(message)
        self.powered_on = powered_on  # False: the source is still off, and the message says to power it on
        # what the failure itself gives the job: a boot check's console, a domain kept for inspection
        for attribute in ("result", "keep_destination"):
            if hasattr(cause, attribute):
                setattr(self, attribute, getattr(cause, attribute))


class SwitchableVM(Protocol):
    def shutdown_guest(self) -> Awaitable[None]: ...
    def wait_powered_off(self, timeout: float) -> Awaitable[None]: ...
    def power_off(self) -> Awaitable[None]: ...
    def power_on(self) -> Awaitable[None]: ...


class WarmRun:
    log = Logger()

    def __init__(self, *, clock, precopy: Precopy, vm: SwitchableVM, vm_name: str, option: WarmOption,
                 shutdown_timeout: float, reporter, note: Callable[[str], None], leftovers, source_off: Leftover,
                 slot):
        self._clock = clock  # a reactor: seconds() and callLater()
        self._precopy = precopy
        self._vm = vm
        self._vm_name = vm_name
        self._option = option
        self._shutdown_timeout = shutdown_timeout
        self._reporter = reporter
        self._note = note
        self._leftovers = leftovers  # JobLeftovers
        self._source_off = source_off  # recorded before the switch-off: a crash then powers it on at the next start
        self._slot = slot  # its worker slot (jobs/slots.py): given back between passes
        # passes of an interrupted run of this job (restart, takeover) go on being listed and counted
        self._earlier = [dict(p) for p in reporter.progress.passes]
        self.passes: list[Pass] = []
        self.cutover_requested = False
        self._wake: Optional[Deferred] = None
        self.switched_off_at: Optional[float] = None

    # -- precopy ---------------------------------------------------------------------

    def request_cutover(self) -> None:
        self.cutover_requested = True
        if self._wake is not None and not self._wake.called:
            self._wake.callback(None)

    async def precopy(self) -> None:
        """Passes until the cutover is due."""
        while True:
            done = await self._precopy.run_pass(self._next_number())
            if self._cutover_due():
                self._record(done)
                return
            next_at = self._clock.seconds() + self._option.precopy_interval
            if self._option.cutover_at is not None:
                next_at = min(next_at, self._option.cutover_at)
            self._reporter.update(next_pass_at=next_at)  # (published with the note: a note is not held back)
            self._record(done, f"; the next at {rfc3339(next_at)} or at the cutover")
            self._slot.give_back()  # nothing to do until then: the node may run another job meanwhile
            await self._sleep_until(next_at)
            self._reporter.update(next_pass_at=None)
            await self._take_slot_back()
            if self._cutover_due():
                return

    async def _take_slot_back(self) -> None:
        taking = self._slot.take_back()
        if not taking.called:
            self._reporter.update(message="waiting for a free worker slot (every one is busy)")
        await taking

    def _cutover_due(self) -> bool:
        at = self._option.cutover_at
        return self.cutover_requested or (at is not None and self._clock.seconds() >= at)

    async def _sleep_until(self, moment: float) -> None:
        timer = None

        def stop_timer(_wake):
            if timer is not None and timer.active():
                timer.cancel()

        self._wake = wake = Deferred(canceller=stop_timer)
        timer = self._clock.callLater(max(0.0, moment - self._clock.seconds()),
                                      lambda: wake.called or wake.callback(None))
        try:
            await wake
        finally:
            self._wake = None
            stop_timer(wake)

    def _next_number(self) -> int:
        return len(self._earlier) + len(self.passes) + 1

    def listed(self) -> list[dict]:
        """Every pass of the job, as progress.passes and the result list them."""
        return self._earlier + [p.to_json() for p in self.passes]

    def _record(self, done: Pass, then: str = "") -> None:
        self.passes.append(done)
        self._reporter.update(passes=tuple(self.listed()))
        kind = "every allocated area" if done.full else "what changed"
        self._note(f"pass {done.number} ({kind}): {done.changed_bytes} bytes changed, {done.read_bytes} read"
                   f" in {done.seconds:.1f} s{then}")

    # -- cutover ---------------------------------------------------------------------

    async def switch_off(self) -> None:
        """Shut the guest down (or power it off, with force_off); from here on a failure rolls back."""
        timeout = self._shutdown_timeout
        await self._leftovers.record(self._source_off)
        self.switched_off_at = self._clock.seconds()  # (the rollback powers on whatever happens from here)
        self._reporter.update(message=f"shutting down the guest of {self._vm_name} (up to {timeout:g} s)")
        await self._vm.shutdown_guest()
        try:
            await self._vm.wait_powered_off(timeout)
        except UpstreamTimeout:
            if not self._option.force_off:
                raise RolledBack(f"the guest of {self._vm_name} did not shut down within {timeout:g} s (set"
                                 " options.warm.force_off to power it off, or shut it down yourself)") from None
            self._note(f"the guest of {self._vm_name} did not shut down within {timeout:g} s: powering it off"
                       " (force_off)")
            await self._vm.power_off()
        self.switched_off_at = self._clock.seconds()
        self._note(f"source {self._vm_name} is off: the downtime starts")

    async def final_pass(self) -> Pass:
        done = await self._precopy.final_pass(self._next_number())
        self._record(done)
        return done

    def downtime(self) -> Optional[float]:
        """Seconds since the source went off (the target is up now)."""
        return None if self.switched_off_at is None else round(self._clock.seconds() - self.switched_off_at, 3)

    async def roll_back(self, cause: BaseException, stopped: Optional[str] = None) -> RolledBack:
        """Power the source on again; the error the job fails with (the cause's, saying so). A cancel
        says why the job was stopped: ``stopped`` (the daemon's stop, a takeover), or the user's cancel."""
        if isinstance(cause, CancelledError):
            why = stopped or "cancelled"
        else:
            why = getattr(cause, "message", None) or str(cause) or type(cause).__name__
        if why.startswith("rolled back: "):
            why = why[len("rolled back: "):]
        try:
            await self._vm.power_on()
            await self._leftovers.forget(self._source_off)
        except Exception as e:
            self.log.error("powering {vm} on again failed: {error}", vm=self._vm_name,
                           error=getattr(e, "message", None) or repr(e))
            return RolledBack(f"rolled back: {why}; powering source {self._vm_name} on again FAILED:"
                              f" {getattr(e, 'message', None) or e}: power it on yourself", cause, powered_on=False)
        return RolledBack(f"rolled back: {why}; source {self._vm_name} powered on again", cause)
