"""Snapshots and Changed Block Tracking, blocking, bounded in time: what warm migration asks of vCenter.

A warm pass takes a snapshot (the base disk is then frozen and readable over /folder), reads the
disks' changeIds from the snapshot's own hardware, asks ``QueryChangedDiskAreas`` what changed
since the last pass's changeId, and removes the snapshot once those areas are copied. Our snapshots
are found by name (``hypersdk-<job id>``), so that one made by a run that died before it heard the
answer is still found and removed.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

from pyVmomi import vim, vmodl

from hypersdk import errors
from hypersdk.vsphere.collector import thd_properties
from hypersdk.vsphere.connection import upstream_errors, where
from hypersdk.vsphere.power import thd_wait_task, vm_faults, vm_name, vm_properties

ALL_AREAS = "*"  # the changeId that asks for every allocated area


class ChangeIdRefused(errors.HyperSDKError):
    """vCenter no longer knows a changeId (tracking was reset): a full pass must follow."""

    code = "change_id_refused"


def snapshot_name(job_id: str) -> str:
    return f"hypersdk-{job_id}"


def _walk(trees) -> Iterator[Any]:
    for tree in trees or []:
        yield tree
        yield from _walk(tree.childSnapshotList)


def thd_snapshots(si: vim.ServiceInstance, vm: vim.VirtualMachine) -> list[tuple[str, vim.vm.Snapshot]]:
    """Every snapshot of the VM, (name, snapshot), the tree flattened."""
    with upstream_errors(where(si)):
        info = vm_properties(si, vm, "snapshot").get("snapshot")
        return [(tree.name, tree.snapshot) for tree in _walk(info.rootSnapshotList if info else [])]


def thd_enable_change_tracking(si: vim.ServiceInstance, vm: vim.VirtualMachine, timeout: float) -> bool:
    """Turn Changed Block Tracking on; False if it was on already. It takes effect at the VM's next
    stun (power on, a snapshot made or removed): until then its disks have no changeId."""
    with upstream_errors(where(si)):
        props = vm_properties(si, vm, "config.changeTrackingEnabled")
        if props.get("config.changeTrackingEnabled"):
            return False
        name = vm_name(vm, props)
        with vm_faults(name, "turn changed block tracking on for"):
            task = vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True))
            thd_wait_task(si, task, timeout, what=f"reconfiguration of VM {name}")
        if not vm_properties(si, vm, "config.changeTrackingEnabled").get("config.changeTrackingEnabled"):
            raise errors.Conflict(f"vCenter did not turn changed block tracking on for VM {name}")
        return True


def thd_create_snapshot(si: vim.ServiceInstance, vm: vim.VirtualMachine, name: str, quiesce: bool,
                        timeout: float) -> vim.vm.Snapshot:
    """A snapshot without memory; the guest's file systems quiesced first when asked (VMware Tools)."""
    with upstream_errors(where(si)):
        called = vm_name(vm, vm_properties(si, vm))
        with vm_faults(called, "snapshot"), _quiesce_faults(called, quiesce):
            task = vm.CreateSnapshot_Task(name=name, description="hypersdk warm migration pass: removed after it",
                                          memory=False, quiesce=quiesce)
            return thd_wait_task(si, task, timeout, what=f"snapshot of VM {called}")


@contextmanager
def _quiesce_faults(called: str, quiesce: bool) -> Iterator[None]:
    """A quiesced snapshot that failed for want of a guest that can quiesce: what to do about it."""
    try:
        yield
    except vim.fault.ToolsUnavailable:
        if not quiesce:
            raise
        raise errors.Conflict(f"cannot take a quiesced snapshot of VM {called}: VMware Tools are not running in"
                              " the guest (start them, or set options.warm.quiesce to false)") from None
    except (vim.fault.FilesystemQuiesceFault, vim.fault.ApplicationQuiesceFault) as e:
        raise errors.Conflict(f"the guest of VM {called} could not quiesce for a snapshot: {e.msg or type(e).__name__}"
                              " (set options.warm.quiesce to false for crash-consistent snapshots)") from None


def thd_remove_snapshots_named(si: vim.ServiceInstance, vm: vim.VirtualMachine, name: str, timeout: float) -> int:
    """Remove every snapshot of the VM with this name (its delta merged into the base): how many."""
    removed = 0
    with upstream_errors(where(si)):
        for found, snapshot in thd_snapshots(si, vm):
            if found != name:
                continue
            try:
                task = snapshot.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
                thd_wait_task(si, task, timeout, what=f"removal of snapshot {name}")
            except vmodl.fault.ManagedObjectNotFound:
                continue  # (removed meanwhile)
            removed += 1
    return removed


def thd_change_ids(si: vim.ServiceInstance, snapshot: vim.vm.Snapshot) -> dict[int, Optional[str]]:
    """Each disk's changeId as of the snapshot (by device key); None while tracking has not taken effect."""
    with upstream_errors(where(si)):
        config = thd_properties(si, snapshot, "config").get("config")
        devices = config.hardware.device if config is not None and config.hardware is not None else []
        return {d.key: getattr(d.backing, "changeId", None) or None
                for d in devices if isinstance(d, vim.vm.device.VirtualDisk)}


def thd_changed_areas(si: vim.ServiceInstance, vm: vim.VirtualMachine, snapshot: Optional[vim.vm.Snapshot],
                      device_key: int, capacity: int, change_id: str) -> list[tuple[int, int]]:
    """The disk's areas changed since ``change_id`` (``"*"``: allocated), as of the snapshot (or now, for a
    powered-off VM without one): (start, length), sorted. vCenter answers part of the disk per call:
    ask again from where its answer ends until the capacity is covered."""
    areas: list[tuple[int, int]] = []
    offset = 0
    with upstream_errors(where(si)):
        while offset < capacity:
            try:
                info = vm.QueryChangedDiskAreas(snapshot=snapshot, deviceKey=device_key, startOffset=offset,
                                                changeId=change_id)
            except vim.fault.FileFault as e:
                raise ChangeIdRefused(f"vCenter refused changeId {change_id} of disk {device_key}: "
                                      f"{e.msg or type(e).__name__}") from None
            for area in info.changedArea or []:
                start, length = int(area.start), int(area.length)
                if areas and areas[-1][0] + areas[-1][1] == start:
                    areas[-1] = (areas[-1][0], areas[-1][1] + length)
                else:
                    areas.append((start, length))
            end = int(info.startOffset) + int(info.length)
            if end <= offset:
                raise errors.UpstreamError(f"vCenter {where(si)} answered QueryChangedDiskAreas for disk {device_key}"
                                           f" at offset {offset} without going forward")
            offset = end
    return areas

