"""Warm passes against a fake source VM and copier: the order of snapshot, query, copy, changeIds and
removal, what each pass asks, and that no snapshot stays whatever happens."""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed

from hypersdk.errors import HyperSDKError
from hypersdk.pipeline.leftovers import Leftover
from hypersdk.vsphere.snapshots import ChangeIdRefused
from hypersdk.warm.precopy import Precopy, WarmDisk, WarmFailed
from tests.helpers import result_of

MiB = 1 << 20
SNAPSHOT = Leftover.snapshot("vc:443", "DC0/vm/web", "hypersdk-j1")


class FakeVM:
    def __init__(self):
        self.calls = []
        self.snapshots = 0
        self.seq = 0
        self.areas = {}  # (key, change_id) -> areas; a missing pair: ChangeIdRefused
        self.hang_query = None

    def create_snapshot(self, name, quiesce):
        self.calls.append(("create", name))
        self.snapshots += 1
        self.seq += 1
        return succeed({2000: f"cid/{self.seq}", 2001: f"cid/{self.seq}"})

    def remove_snapshots(self, name):
        self.calls.append(("remove", name))
        removed, self.snapshots = self.snapshots, 0
        return succeed(removed)

    def changed_areas(self, snapshot, key, capacity, change_id):
        self.calls.append(("query", snapshot, key, change_id))
        if self.hang_query is not None:
            return self.hang_query
        if (key, change_id) not in self.areas:
            raise ChangeIdRefused(f"vCenter refused changeId {change_id}")
        return succeed(self.areas[(key, change_id)])


class FakeCopier:
    def __init__(self):
        self.stored = {}
        self.calls = []
        self.fail_copy = None

    def change_ids(self):
        return dict(self.stored)

    def copy_areas(self, areas):
        self.calls.append(("copy", areas))
        if self.fail_copy:
            raise self.fail_copy
        return succeed({i: sum(n for _, n in spans) for i, spans in areas.items()})

    def start_over(self, index):
        self.calls.append(("start_over", index))
        self.stored.pop(index, None)
        return succeed(None)

    def save_change_ids(self, change_ids):
        self.calls.append(("save", change_ids))
        self.stored.update(change_ids)
        return succeed(None)


class FakeLeftovers:
    def __init__(self, vm):
        self.vm = vm
        self.recorded = []

    def record(self, leftover):
        self.vm.calls.append(("record", leftover.name))
        self.recorded.append(leftover)
        return succeed(None)

    def forget(self, leftover=None):
        self.recorded.remove(leftover)
        return succeed(None)


@pytest.fixture
def warm():
    vm, copier = FakeVM(), FakeCopier()
    leftovers = FakeLeftovers(vm)
    notes = []
    disks = [WarmDisk(0, 2000, "Hard disk 1", 64 * MiB), WarmDisk(1, 2001, "Hard disk 2", 32 * MiB)]
    precopy = Precopy(vm=vm, copier=copier, ready=lambda: succeed(None), leftovers=leftovers, snapshot=SNAPSHOT, disks=disks,
                      seconds=lambda: 100.0, note=notes.append)
    return precopy, vm, copier, leftovers, notes


def test_the_first_pass_reads_every_allocated_area_of_the_snapshot_then_stores_its_change_ids(warm):
    precopy, vm, copier, leftovers, _ = warm
    vm.areas = {(2000, "*"): [(0, MiB), (8 * MiB, 2 * MiB)], (2001, "*"): [(0, 64 * 1024)]}
    done = result_of(ensureDeferred(precopy.run_pass(1)))
    assert done.full and done.read_bytes == done.changed_bytes == 3 * MiB + 64 * 1024
    assert vm.calls == [("record", "hypersdk-j1"), ("remove", "hypersdk-j1"), ("create", "hypersdk-j1"),  # recorded first
                        ("query", "hypersdk-j1", 2000, "*"),
                        ("query", "hypersdk-j1", 2001, "*"), ("remove", "hypersdk-j1")]
    assert copier.calls[:2] == [("start_over", 0), ("start_over", 1)]  # an interrupted first pass starts over too
    assert copier.calls[-1] == ("save", {0: "cid/1", 1: "cid/1"})
    assert vm.snapshots == 0 and leftovers.recorded == []


def test_a_later_pass_reads_what_changed_since_the_stored_change_id(warm):
    precopy, vm, copier, _, _ = warm
    copier.stored = {0: "cid/1", 1: "cid/1"}
    vm.seq = 1
    vm.areas = {(2000, "cid/1"): [(4 * MiB, MiB)], (2001, "cid/1"): []}
    done = result_of(ensureDeferred(precopy.run_pass(2)))
    assert not done.full and done.read_bytes == MiB
    assert ("copy", {0: [(4 * MiB, MiB)], 1: []}) in copier.calls
    assert copier.stored == {0: "cid/2", 1: "cid/2"}


def test_a_refused_change_id_makes_that_disk_a_full_pass_said_in_the_history(warm):
    precopy, vm, copier, _, notes = warm
    copier.stored = {0: "old/7", 1: "cid/1"}
    vm.seq = 1
    vm.areas = {(2000, "*"): [(0, 2 * MiB)], (2001, "cid/1"): [(0, MiB)]}
    done = result_of(ensureDeferred(precopy.run_pass(2)))
    assert done.full and ("start_over", 0) in copier.calls and ("start_over", 1) not in copier.calls
    assert notes == ["Hard disk 1: vCenter refused changeId old/7: a full pass reads the whole disk again"]
    assert copier.stored == {0: "cid/2", 1: "cid/2"}


@pytest.mark.parametrize("where", ["copy", "no change id"])
def test_the_snapshot_is_removed_and_no_change_id_stored_when_a_pass_fails(warm, where):
    precopy, vm, copier, leftovers, _ = warm
    vm.areas = {(2000, "*"): [(0, MiB)], (2001, "*"): [(0, MiB)]}
    if where == "copy":
        copier.fail_copy = HyperSDKError("bytes 0-1048575: the datastore answered 500")
    else:
        vm.create_snapshot = lambda name, quiesce: (vm.calls.append(("create", name)),
                                                    setattr(vm, "snapshots", 1), succeed({2000: "cid/1"}))[2]
    with pytest.raises(HyperSDKError) as failed:
        result_of(ensureDeferred(precopy.run_pass(1)))
    if where == "no change id":
        assert isinstance(failed.value, WarmFailed) and "Hard disk 2" in failed.value.message
    assert vm.calls[-1] == ("remove", "hypersdk-j1") and vm.snapshots == 0
    assert copier.stored == {} and leftovers.recorded == []


def test_a_cancelled_pass_removes_its_snapshot(warm):
    precopy, vm, copier, leftovers, _ = warm
    vm.hang_query = Deferred()
    running = ensureDeferred(precopy.run_pass(1))
    assert vm.snapshots == 1
    running.cancel()
    with pytest.raises(CancelledError):
        result_of(running)
    assert vm.snapshots == 0 and leftovers.recorded == [] and copier.stored == {}


def test_the_final_pass_asks_with_no_snapshot_since_the_last_change_id(warm):
    precopy, vm, copier, _, _ = warm
    copier.stored = {0: "cid/3", 1: "cid/3"}
    vm.areas = {(2000, "cid/3"): [(MiB, 64 * 1024)], (2001, "cid/3"): []}
    done = result_of(ensureDeferred(precopy.final_pass(4)))
    assert vm.calls == [("query", None, 2000, "cid/3"), ("query", None, 2001, "cid/3")]  # (no snapshot)
    assert done.read_bytes == 64 * 1024 and not done.full and vm.snapshots == 0


def test_the_final_pass_refuses_a_disk_without_a_change_id(warm):
    precopy, vm, copier, _, _ = warm
    copier.stored = {0: "cid/3"}
    vm.areas = {(2000, "cid/3"): []}
    with pytest.raises(WarmFailed, match="Hard disk 2 has no changeId"):
        result_of(ensureDeferred(precopy.final_pass(4)))


def test_a_snapshot_an_interrupted_pass_left_is_removed_before_the_next_is_made(warm):
    precopy, vm, copier, _, notes = warm
    vm.snapshots = 1  # a SIGKILL between its creation and its removal
    vm.areas = {(2000, "*"): [], (2001, "*"): []}
    result_of(ensureDeferred(precopy.run_pass(1)))
    assert vm.calls[:3] == [("record", "hypersdk-j1"), ("remove", "hypersdk-j1"), ("create", "hypersdk-j1")]
    assert notes == ["removed 1 snapshot(s) hypersdk-j1 an interrupted pass left"] and vm.snapshots == 0
