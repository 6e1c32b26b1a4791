"""A warm job's timeline on a fake clock: passes every precopy_interval until a cutover request or
cutover_at, the next pass announced, and the rollback's words."""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import Clock

from hypersdk.errors import HyperSDKError, UpstreamTimeout
from hypersdk.jobs.definition import WarmOption
from hypersdk.jobs.model import Progress
from hypersdk.jobs.slots import HeldSlot
from hypersdk.pipeline.leftovers import Leftover
from hypersdk.warm.precopy import Pass
from hypersdk.warm.run import RolledBack, WarmRun
from tests.helpers import result_of


class FakePrecopy:
    def __init__(self, clock):
        self.clock = clock
        self.numbers = []

    def run_pass(self, number):
        self.numbers.append(number)
        return succeed(Pass(number, self.clock.seconds(), 10, 10, 1.0, number == 1))

    def final_pass(self, number):
        return self.run_pass(number)


class FakeVM:
    def __init__(self, stops=True):
        self.calls = []
        self.stops = stops

    def shutdown_guest(self):
        self.calls.append("shutdown")
        return succeed(None)

    def wait_powered_off(self, timeout):
        self.calls.append(f"wait {timeout:g}")
        return succeed(None) if self.stops else fail(UpstreamTimeout("did not power off"))

    def power_off(self):
        self.calls.append("power off")
        return succeed(None)

    def power_on(self):
        self.calls.append("power on")
        return succeed(None)


class Reporter:
    def __init__(self):
        self.progress = Progress()
        self.updates = []

    def update(self, **changes):
        self.updates.append(changes)


class Leftovers:
    def __init__(self):
        self.recorded = []

    def record(self, leftover):
        self.recorded.append(leftover)
        return succeed(None)

    def forget(self, leftover=None):
        self.recorded.remove(leftover)
        return succeed(None)


class Slot:
    """A worker slot that the test hands back when it wants."""

    def __init__(self):
        self.held, self.taking = True, None

    def give_back(self):
        self.held = False

    def take_back(self):
        self.taking = Deferred()
        return self.taking


def warm_run(option, vm=None, slot=None):
    clock = Clock()
    clock.advance(1000)
    notes, reporter, leftovers = [], Reporter(), Leftovers()
    run = WarmRun(clock=clock, precopy=FakePrecopy(clock), vm=vm or FakeVM(), vm_name="web", option=option,
                  shutdown_timeout=300, reporter=reporter, note=notes.append, leftovers=leftovers,
                  source_off=Leftover.source_off("vc:443", "DC0/vm/web"), slot=slot or HeldSlot())
    return run, clock, notes, reporter, leftovers


def test_passes_run_every_interval_until_the_cutover_is_asked_and_the_next_one_is_announced():
    run, clock, notes, reporter, _ = warm_run(WarmOption(precopy_interval=600))
    waiting = ensureDeferred(run.precopy())
    assert run._precopy.numbers == [1] and not waiting.called
    assert {"next_pass_at": 1600.0} in reporter.updates
    assert notes[-1].startswith("pass 1 (every allocated area): 10 bytes changed, 10 read in 1.0 s; the next at ")
    clock.advance(600)
    assert run._precopy.numbers == [1, 2] and not waiting.called
    clock.advance(100)
    run.request_cutover()  # wakes the wait: no pass 3 at 2200
    result_of(waiting)
    assert run._precopy.numbers == [1, 2] and not clock.getDelayedCalls()


def test_cutover_at_ends_the_passes_at_that_moment():
    run, clock, _, _, _ = warm_run(WarmOption(precopy_interval=600, cutover_at=1900.0))
    waiting = ensureDeferred(run.precopy())
    clock.advance(600)  # pass 2 at 1600; the next would be at 2200, after cutover_at
    assert run._precopy.numbers == [1, 2] and not waiting.called
    clock.advance(300)
    result_of(waiting)
    assert run._precopy.numbers == [1, 2]


def test_a_guest_that_does_not_shut_down_is_rolled_back_unless_force_off():
    run, _, _, _, leftovers = warm_run(WarmOption(), FakeVM(stops=False))
    with pytest.raises(RolledBack, match="did not shut down within 300 s"):
        result_of(ensureDeferred(run.switch_off()))
    assert leftovers.recorded == [Leftover.source_off("vc:443", "DC0/vm/web")]  # recorded before
    forced, _, notes, _, _ = warm_run(WarmOption(force_off=True), FakeVM(stops=False))
    result_of(ensureDeferred(forced.switch_off()))
    assert forced._vm.calls == ["shutdown", "wait 300", "power off"] and "powering it off (force_off)" in notes[0]


def test_the_rollback_powers_the_source_on_keeps_what_the_failure_gave_and_says_so():
    run, _, _, _, leftovers = warm_run(WarmOption())
    result_of(ensureDeferred(run.switch_off()))
    cause = HyperSDKError("the guest failed to boot")
    cause.result, cause.keep_destination = {"boot_check": {"passed": False}}, True
    rolled = result_of(ensureDeferred(run.roll_back(cause)))
    assert rolled.message == "rolled back: the guest failed to boot; source web powered on again"
    assert rolled.result == {"boot_check": {"passed": False}} and rolled.keep_destination is True
    assert run._vm.calls[-1] == "power on" and leftovers.recorded == []


def test_a_cancel_after_the_switch_off_is_rolled_back_as_a_cancel():
    run, _, _, _, leftovers = warm_run(WarmOption())
    result_of(ensureDeferred(run.switch_off()))
    rolled = result_of(ensureDeferred(run.roll_back(CancelledError())))
    assert rolled.message == "rolled back: cancelled; source web powered on again"
    assert run._vm.calls[-1] == "power on" and leftovers.recorded == []


def test_between_passes_the_worker_slot_is_given_back_and_the_next_pass_waits_to_take_one():
    slot = Slot()
    run, clock, _, reporter, _ = warm_run(WarmOption(precopy_interval=600), slot=slot)
    waiting = ensureDeferred(run.precopy())
    assert run._precopy.numbers == [1] and slot.held is False and slot.taking is None
    clock.advance(600)  # the next pass is due, and every slot is busy
    assert run._precopy.numbers == [1] and slot.taking is not None
    assert {"message": "waiting for a free worker slot (every one is busy)"} in reporter.updates
    slot.taking.callback(None)
    assert run._precopy.numbers == [1, 2]
    run.request_cutover()
    assert not waiting.called  # the cutover needs a slot too
    slot.taking.callback(None)
    result_of(waiting)


def test_a_cancel_whose_power_on_fails_says_so_and_one_from_a_stop_says_why():
    failing = FakeVM()
    failing.power_on = lambda: fail(UpstreamTimeout("vCenter did not answer"))
    run, _, _, _, _ = warm_run(WarmOption(), failing)
    result_of(ensureDeferred(run.switch_off()))
    rolled = result_of(ensureDeferred(run.roll_back(CancelledError())))
    assert rolled.powered_on is False and rolled.message == (
        "rolled back: cancelled; powering source web on again FAILED: vCenter did not answer: power it on yourself")
    stopped, _, _, _, _ = warm_run(WarmOption())
    result_of(ensureDeferred(stopped.switch_off()))
    rolled = result_of(ensureDeferred(stopped.roll_back(CancelledError(), "the daemon stopped during cutover")))
    assert rolled.powered_on and rolled.message == ("rolled back: the daemon stopped during cutover; source web"
                                                    " powered on again")
