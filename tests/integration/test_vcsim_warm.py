"""The test simulator behaves as vSphere does for warm migration (tests/vcsim, see its main.go header):
Changed Block Tracking and its changeIds, QueryChangedDiskAreas with its faults and paging, a running
VM's locked flat file, a snapshot's frozen base and the merge of its delta, and the stun points of
ShutdownGuest and power on. pyvmomi against the real simulator process."""

from __future__ import annotations

import re
import uuid

import pytest
from pyVmomi import SoapStubAdapter, vim, vmodl

from hypersdk.vsphere.connection import VCenterParams, thd_connect
from tests.integration.polling import wait_for
from tests.integration.vcsim import MiB, Vcsim, VcsimError, Write, create_vm_with_disk, destroy_vm, wait_task

KiB = 1024
BLOCK = 64 * KiB
SIZE = 8 * MiB
MAX_EXTENTS = 3
WRITES = (Write(0, MiB, 0xAB), Write(4 * MiB, 64 * KiB, 0xCD), Write(SIZE - 4096, 4096, 0xEF))
CHANGE_ID = re.compile(r"^([0-9a-f]{2} ){7}[0-9a-f]{2}-([0-9a-f]{2} ){7}[0-9a-f]{2}/\d+$")


@pytest.fixture(scope="module")
def sim():
    """A simulator answering at most MAX_EXTENTS extents per QueryChangedDiskAreas: clients must page."""
    with Vcsim.start(args=["-cbt-max-extents", str(MAX_EXTENTS)]) as s:
        yield s


@pytest.fixture(scope="module")
def si(sim):
    return thd_connect(VCenterParams.from_url(sim.info.url, "user", "pass", insecure=True), 30)


class Source:
    """A VM with one real flat 8 MiB disk holding WRITES."""

    def __init__(self, si, sim, tmp_path):
        self.si, self.sim = si, sim
        self.name = f"warm-{uuid.uuid4().hex[:6]}"
        path = create_vm_with_disk(si, sim, tmp_path, self.name, SIZE, WRITES)
        self.vm = si.RetrieveContent().searchIndex.FindByInventoryPath(path)
        self.flat = f"{self.name}/{self.name}-flat.vmdk"

    @property
    def disk(self) -> vim.vm.device.VirtualDisk:
        return next(d for d in self.vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))

    def change_id(self) -> str:
        return self.disk.backing.changeId or ""

    def set_cbt(self, enabled: bool) -> None:
        wait_task(self.vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=enabled)))

    def power_on(self) -> None:
        wait_task(self.vm.PowerOnVM_Task())

    def shutdown(self) -> None:
        self.vm.ShutdownGuest()
        wait_for(lambda: self.vm.runtime.powerState == "poweredOff", 10, "guest shutdown")

    def snapshot(self, name: str = "warm", quiesce: bool = False) -> vim.vm.Snapshot:
        return wait_task(self.vm.CreateSnapshot_Task(name=name, memory=False, quiesce=quiesce))

    def remove(self, snapshot: vim.vm.Snapshot) -> None:
        # (the simulator's RemoveSnapshot task names the snapshot as its entity, which pyvmomi refuses
        # when reading task.info whole: read its state through the property collector)
        task = snapshot.RemoveSnapshot_Task(removeChildren=False)
        wait_for(lambda: properties(self.si, task, vim.Task, "info.state")["info.state"] in ("success", "error"),
                 10, "snapshot removal")
        info = properties(self.si, task, vim.Task, "info.state", "info.error")
        assert info["info.state"] == "success", info.get("info.error")

    def query(self, change_id: str, snapshot=None, start: int = 0) -> vim.VirtualMachine.DiskChangeInfo:
        return self.vm.QueryChangedDiskAreas(snapshot=snapshot, deviceKey=self.disk.key, startOffset=start,
                                             changeId=change_id)

    def changed(self, change_id: str, snapshot=None) -> tuple[list[tuple[int, int]], int]:
        """All changed extents, asked as real clients do (again from start+length until the capacity is
        covered), and how many calls that took."""
        extents, start, calls = [], 0, 0
        while start < SIZE:
            info = self.query(change_id, snapshot, start)
            calls += 1
            assert info.startOffset == start and info.length > 0
            extents += [(a.start, a.length) for a in info.changedArea or ()]
            start = info.startOffset + info.length
        return merge(extents), calls


def properties(si, obj, kind, *paths: str) -> dict:
    pc = si.RetrieveContent().propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=obj)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=list(paths))],
    )
    [content] = pc.RetrieveContents([spec])
    return {p.name: p.val for p in content.propSet}


def snapshot_change_id(si, snapshot: vim.vm.Snapshot) -> str:
    config = properties(si, snapshot, vim.vm.Snapshot, "config")["config"]
    [disk] = [d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    return disk.backing.changeId or ""


def merge(extents) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for start, length in sorted(extents):
        if out and out[-1][0] + out[-1][1] == start:
            out[-1][1] += length
        else:
            out.append([start, length])
    return [tuple(e) for e in out]


def blocks_of(*ranges: tuple[int, int]) -> list[tuple[int, int]]:
    """The 64 KiB blocks that writes of (offset, length) touch, as merged extents."""
    touched = sorted({b for off, length in ranges for b in range(off // BLOCK, (off + length - 1) // BLOCK + 1)})
    return merge((b * BLOCK, BLOCK) for b in touched)


@pytest.fixture
def source(si, sim, tmp_path):
    made = Source(si, sim, tmp_path)
    yield made
    snapshots = properties(si, made.vm, vim.VirtualMachine, "snapshot").get("snapshot")
    if snapshots is not None:
        wait_task(made.vm.RemoveAllSnapshots_Task())
    destroy_vm(made.vm)


def test_change_id_is_empty_until_the_first_snapshot_then_star_lists_the_data(si, source):
    source.power_on()
    source.set_cbt(True)
    assert source.vm.config.changeTrackingEnabled is True
    assert source.change_id() == ""  # enabling on a running VM takes effect at the next stun

    snap = source.snapshot()
    assert CHANGE_ID.match(source.change_id())
    assert snapshot_change_id(si, snap) == source.change_id()
    assert source.changed("*", snap)[0] == [(0, MiB), (4 * MiB, BLOCK), (SIZE - BLOCK, BLOCK)]


def test_since_a_change_id_the_written_blocks_are_listed(si, sim, source):
    source.power_on()
    source.set_cbt(True)
    first = source.snapshot("pass-1")
    since = snapshot_change_id(si, first)
    sim.guest_write(source.name, 0, 100_000, 10, seed=1)  # into the delta of pass-1
    sim.guest_write(source.name, 0, 3 * MiB + 5, 200_000, seed=2)
    source.remove(first)  # the delta is merged into the base
    assert source.change_id() not in ("", since)  # a removal is a stun point
    sim.guest_write(source.name, 0, SIZE - 1, 1, byte=0x11)  # into the base: no snapshot now
    second = source.snapshot("pass-2")

    extents, _ = source.changed(since, second)
    assert extents == blocks_of((100_000, 10), (3 * MiB + 5, 200_000), (SIZE - 1, 1))
    assert source.changed(snapshot_change_id(si, second), second)[0] == []
    assert CHANGE_ID.match(since) and since.split("/")[0] == source.change_id().split("/")[0]


def test_a_running_vm_s_flat_file_is_locked_until_a_snapshot_freezes_its_base(sim, source):
    assert source.sim.folder_get(source.flat, 0, 4096) == (206, b"\xab" * 4096)  # powered off: readable
    source.power_on()
    status, body = sim.folder_get(source.flat, 0, 4096)
    assert status == 500 and b"locked" in body

    snap = source.snapshot()
    sim.guest_write(source.name, 0, 0, 4096, byte=0x5A)
    assert sim.folder_get(source.flat, 0, 8192) == (206, b"\xab" * 8192)  # the base holds the snapshot's state
    assert sim.guest_read(source.name, 0, 0, 8192) == b"\x5a" * 4096 + b"\xab" * 4096

    source.remove(snap)
    assert sim.folder_get(source.flat, 0, 4096)[0] == 500  # running again without a snapshot
    source.shutdown()
    assert sim.folder_get(source.flat, 0, 8192) == (206, b"\x5a" * 4096 + b"\xab" * 4096)  # merged


def test_nested_snapshots_merge_each_delta_into_its_parent(sim, source):
    source.power_on()
    outer = source.snapshot("outer")
    sim.guest_write(source.name, 0, 0, 4096, byte=1)
    inner = source.snapshot("inner")
    sim.guest_write(source.name, 0, 4096, 4096, byte=2)
    assert sim.folder_get(source.flat, 0, 8192)[1] == b"\xab" * 8192
    source.remove(outer)  # what came after it (byte 1) reaches the base; byte 2 stays in the inner delta
    assert sim.folder_get(source.flat, 0, 8192)[1] == b"\x01" * 4096 + b"\xab" * 4096
    assert sim.guest_read(source.name, 0, 0, 8192) == b"\x01" * 4096 + b"\x02" * 4096
    source.remove(inner)
    assert sim.folder_get(source.flat, 0, 8192)[0] == 500  # running with no snapshot left
    source.shutdown()
    assert sim.folder_get(source.flat, 0, 8192)[1] == b"\x01" * 4096 + b"\x02" * 4096


def test_change_ids_from_before_tracking_was_enabled_again_are_a_file_fault(si, source):
    source.power_on()
    source.set_cbt(True)
    snap = source.snapshot()
    old = snapshot_change_id(si, snap)
    source.set_cbt(False)
    assert source.change_id() == ""
    source.set_cbt(True)
    source.remove(snap)  # the stun point where the new tracking starts
    snap = source.snapshot()
    new = snapshot_change_id(si, snap)
    assert new.split("/")[0] != old.split("/")[0]

    with pytest.raises(vim.fault.FileFault):
        source.query(old, snap)
    uuid_part, seq = new.rsplit("/", 1)
    with pytest.raises(vim.fault.FileFault):
        source.query(f"{uuid_part}/{int(seq) + 5}", snap)
    assert source.changed(new, snap)[0] == []


def test_a_start_offset_at_the_capacity_is_an_invalid_argument(source):
    source.power_on()
    source.set_cbt(True)
    snap = source.snapshot()
    with pytest.raises(vmodl.fault.InvalidArgument):
        source.query("*", snap, start=SIZE)
    info = source.query("*", snap, start=SIZE - 4096)
    assert [(a.start, a.length) for a in info.changedArea] == [(SIZE - 4096, 4096)] and info.length == 4096


def test_an_answer_holds_at_most_max_extents_and_its_length_ends_with_the_last(sim, source):
    source.power_on()
    source.set_cbt(True)
    first = source.snapshot()
    since = snapshot_change_id(si=source.si, snapshot=first)
    offsets = [i * 3 * BLOCK + 7 for i in range(7)]
    for off in offsets:
        sim.guest_write(source.name, 0, off, 100, seed=off)
    source.remove(first)
    second = source.snapshot()

    info = source.query(since, second)
    areas = [(a.start, a.length) for a in info.changedArea]
    assert areas == [(0, BLOCK), (3 * BLOCK, BLOCK), (6 * BLOCK, BLOCK)]  # MAX_EXTENTS, adjacent ones merged
    assert info.length == 7 * BLOCK
    extents, calls = source.changed(since, second)
    assert extents == blocks_of(*[(off, 100) for off in offsets]) and calls == 3


def test_shutdown_and_power_on_change_the_state_and_are_stun_points(sim, source):
    source.set_cbt(True)
    assert source.change_id() == ""
    source.power_on()
    assert source.vm.runtime.powerState == "poweredOn"
    on = source.change_id()
    assert CHANGE_ID.match(on)
    source.shutdown()
    assert source.vm.runtime.powerState == "poweredOff"
    off = source.change_id()
    assert off not in ("", on) and off.split("/")[0] == on.split("/")[0]
    with pytest.raises(VcsimError, match="409"):
        sim.guest_write(source.name, 0, 0, 10, byte=1)
    source.power_on()
    assert source.vm.runtime.powerState == "poweredOn" and source.change_id() not in (on, off)


def test_a_query_without_snapshot_needs_a_powered_off_vm_and_gives_the_last_delta(sim, source):
    source.set_cbt(True)
    source.power_on()
    since = source.change_id()
    sim.guest_write(source.name, 0, 2 * MiB, 3 * BLOCK, seed=9)
    with pytest.raises(vim.fault.InvalidState):
        source.query(since)
    source.shutdown()
    assert source.changed(since)[0] == [(2 * MiB, 3 * BLOCK)]
    assert source.changed("*")[0] == [(0, MiB), (2 * MiB, 3 * BLOCK), (4 * MiB, BLOCK), (SIZE - BLOCK, BLOCK)]
    assert source.changed(source.change_id())[0] == []
    assert sim.folder_get(source.flat, 2 * MiB, 3 * BLOCK)[1] == sim.guest_read(source.name, 0, 2 * MiB, 3 * BLOCK)


def test_a_snapshot_of_another_vm_is_refused(si, sim, source, tmp_path):
    other = Source(si, sim, tmp_path / "other")
    try:
        source.set_cbt(True)
        source.power_on()
        theirs = other.snapshot()
        with pytest.raises(vmodl.fault.InvalidArgument):
            source.query("*", theirs)
    finally:
        wait_task(other.vm.RemoveAllSnapshots_Task())
        destroy_vm(other.vm)


def test_query_changed_disk_areas_needs_a_session(si, sim, source):
    source.power_on()
    source.set_cbt(True)
    snap = source.snapshot()
    stub = SoapStubAdapter(host="127.0.0.1", port=sim.info.port, version=si._stub.version, sslContext=sim.ssl_context())
    anonymous = vim.VirtualMachine(source.vm._moId, stub)
    with pytest.raises(vim.fault.NotAuthenticated):
        anonymous.QueryChangedDiskAreas(snapshot=snap, deviceKey=source.disk.key, startOffset=0, changeId="*")


def test_removing_all_snapshots_merges_every_delta_into_the_base(sim, source):
    source.power_on()
    source.snapshot("a")
    sim.guest_write(source.name, 0, 0, 4096, byte=1)
    source.snapshot("b")
    sim.guest_write(source.name, 0, 4096, 4096, byte=2)
    wait_task(source.vm.RemoveAllSnapshots_Task())
    source.shutdown()
    assert sim.folder_get(source.flat, 0, 3 * 4096)[1] == b"\x01" * 4096 + b"\x02" * 4096 + b"\xab" * 4096


def test_a_quiesced_snapshot_needs_vmware_tools_running_and_each_creation_is_listed(sim, source):
    source.power_on()
    with pytest.raises(vim.fault.ToolsUnavailable, match="VMware Tools is not running"):
        source.snapshot("q1", quiesce=True)
    assert properties(source.si, source.vm, vim.VirtualMachine, "snapshot").get("snapshot") is None
    sim.guest_tools(source.name, True)
    assert source.vm.guest.toolsRunningStatus == "guestToolsRunning"
    source.remove(source.snapshot("q2", quiesce=True))
    source.remove(source.snapshot("plain"))
    assert sim.snapshots_created(source.name) == [{"name": "q2", "quiesced": True},
                                                  {"name": "plain", "quiesced": False}]
