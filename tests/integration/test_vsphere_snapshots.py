"""Warm migration's calls to vCenter (vsphere/snapshots.py) against the real simulator: Changed Block
Tracking turned on, snapshots made and found again by name, removed, and a VM powered on again."""

from __future__ import annotations

import uuid

import pytest
from pyVmomi import vim, vmodl

from hypersdk import errors
from hypersdk.vsphere import inventory, power, snapshots
from tests.integration.vcsim import MiB, create_vm_with_disk, destroy_vm, wait_task

TIMEOUT = 30.0


@pytest.fixture
def vm(si, sim, tmp_path):
    name = f"snap-{uuid.uuid4().hex[:6]}"
    created = inventory.thd_find_vm(si, create_vm_with_disk(si, sim, tmp_path, name, 8 * MiB, []))
    yield created
    try:
        destroy_vm(created)
    except vmodl.fault.ManagedObjectNotFound:
        pass  # (the test destroyed it)


def test_change_tracking_is_turned_on_once(si, vm):
    assert vm.config.changeTrackingEnabled is not True
    assert snapshots.thd_enable_change_tracking(si, vm, TIMEOUT) is True
    assert vm.config.changeTrackingEnabled is True
    assert snapshots.thd_enable_change_tracking(si, vm, TIMEOUT) is False
    assert inventory.thd_read_vm(si, vm, "x").change_tracking is True


def test_a_snapshot_is_found_by_its_name_and_removed_with_every_namesake(si, vm):
    wait_task(vm.CreateSnapshot_Task(name="theirs", memory=False, quiesce=False))
    name = snapshots.snapshot_name("job-1")
    made = snapshots.thd_create_snapshot(si, vm, name, quiesce=False, timeout=TIMEOUT)
    assert isinstance(made, vim.vm.Snapshot)
    snapshots.thd_create_snapshot(si, vm, name, quiesce=False, timeout=TIMEOUT)  # a retried create: two of ours
    assert [n for n, _ in snapshots.thd_snapshots(si, vm)] == ["theirs", name, name]
    assert inventory.thd_read_vm(si, vm, "x").snapshot_names == ("theirs", name, name)
    assert snapshots.thd_change_ids(si, made).keys() == {d.key for d in vm.config.hardware.device
                                                          if isinstance(d, vim.vm.device.VirtualDisk)}
    assert snapshots.thd_remove_snapshots_named(si, vm, name, TIMEOUT) == 2
    assert [n for n, _ in snapshots.thd_snapshots(si, vm)] == ["theirs"]  # the user's own stays
    assert snapshots.thd_remove_snapshots_named(si, vm, name, TIMEOUT) == 0


def test_power_on_waits_for_the_task_and_does_nothing_on_a_running_vm(si, vm):
    assert vm.runtime.powerState == "poweredOff"
    power.thd_power_on(si, vm, TIMEOUT)
    assert vm.runtime.powerState == "poweredOn"
    power.thd_power_on(si, vm, TIMEOUT)
    power.thd_power_off(si, vm, TIMEOUT)


def test_power_on_of_a_vanished_vm_names_it(si, vm):
    destroy_vm(vm)
    with pytest.raises(errors.VMNotFound):
        power.thd_power_on(si, vm, TIMEOUT)
