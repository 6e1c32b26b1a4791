"""Warm passes: copy what changed while the source VM runs, one snapshot of ours at a time.

A pass takes the snapshot ``hypersdk-<job id>`` (recorded as the job's leftover before it is made),
reads each disk's changeId from it, asks vCenter which areas changed since the changeId the last
pass stored (``"*"`` for the first: every allocated area), copies exactly those areas from the
frozen base disk, stores the new changeIds with the checkpoint, and removes the snapshot whatever
happened (its delta merges back into the base). The final pass runs with the VM off and no
snapshot: the changes since the last stored changeId, as of now.

A disk with no stored changeId (a first pass, or one interrupted before it stored any) or whose
changeId vCenter refuses (tracking was reset; said in the job's history) has a full pass: its
chunks are dropped, its target emptied, and every allocated area read.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Optional, Protocol, Sequence

from attrs import frozen

from ..errors import HyperSDKError
from ..pipeline.leftovers import Leftover
from ..vsphere.snapshots import ALL_AREAS, ChangeIdRefused


class WarmFailed(HyperSDKError):
    code = "warm_failed"


@frozen
class WarmDisk:
    index: int  # in the job's disk order
    key: int  # vSphere device key
    label: str
    capacity: int


@frozen
class Pass:
    """One pass, as ``progress.passes`` lists it."""

    number: int
    started_at: float
    read_bytes: int  # what the datastore sent
    changed_bytes: int  # what vCenter said changed (allocated, for a first pass)
    seconds: float
    full: bool  # every allocated area (a first pass, or after tracking was reset)
    query_seconds: float = 0.0  # of ``seconds``, waiting for vCenter to say what changed

    def to_json(self) -> dict:
        return {"number": self.number, "started_at": self.started_at, "read_bytes": self.read_bytes,
                "changed_bytes": self.changed_bytes, "seconds": round(self.seconds, 3), "full": self.full,
                "query_seconds": round(self.query_seconds, 3)}


class SourceVM(Protocol):
    """The source VM as warm passes use it (the vSphere client, bound to one VM)."""

    def create_snapshot(self, name: str, quiesce: bool) -> Awaitable[dict[int, Optional[str]]]: ...
    def remove_snapshots(self, name: str) -> Awaitable[int]: ...
    def changed_areas(self, snapshot: Optional[str], device_key: int, capacity: int,
                      change_id: str) -> Awaitable[list[tuple[int, int]]]: ...


class AreaCopier(Protocol):
    """The transfer engine as warm passes use it (``pipeline/copying.py``)."""

    def change_ids(self) -> dict[int, Optional[str]]: ...  # stored with the checkpoint, by disk index
    def copy_areas(self, areas: dict[int, list[tuple[int, int]]]) -> Awaitable[dict[int, int]]: ...
    def start_over(self, index: int) -> Awaitable[None]: ...  # drop a disk's chunks and changeId, empty its target
    def save_change_ids(self, change_ids: dict[int, str]) -> Awaitable[None]: ...


class Precopy:
    def __init__(self, *, vm: SourceVM, copier: AreaCopier, ready: Callable[[], Awaitable[None]], leftovers,
                 snapshot: Leftover, disks: Sequence[WarmDisk], seconds: Callable[[], float],
                 note: Callable[[str], None], quiesce: bool = False):
        self._vm = vm
        self._copier = copier
        self._ready = ready  # the copier reads its checkpoints and the source's size: the files are readable
        self._leftovers = leftovers  # JobLeftovers
        self._snapshot = snapshot  # Leftover.snapshot(...): its name is the snapshot's
        self._disks = list(disks)
        self._seconds = seconds
        self._note = note
        self._quiesce = quiesce

    async def run_pass(self, number: int) -> Pass:
        """Snapshot, copy what changed from the frozen base, store the changeIds, remove the snapshot."""
        started = self._seconds()
        name = self._snapshot.name
        await self._leftovers.record(self._snapshot)  # before it is made: a crash leaves it findable
        try:
            # One of ours at a time: one an interrupted run left (on this node or the one it was taken
            # over from) would keep the base frozen at its own, older moment.
            stale = await self._vm.remove_snapshots(name)
            if stale:
                self._note(f"removed {stale} snapshot(s) {name} an interrupted pass left")
            change_ids = await self._vm.create_snapshot(name, self._quiesce)
            missing = [d.label for d in self._disks if not change_ids.get(d.key)]
            if missing:
                raise WarmFailed(f"vCenter gave no changeId for {', '.join(missing)} in the snapshot: changed block"
                                 " tracking is not in effect on that disk")
            await self._ready()
            read, changed, full, asking = await self._copy(name)
            await self._copier.save_change_ids({d.index: change_ids[d.key] for d in self._disks})
        finally:
            await self._vm.remove_snapshots(name)
            await self._leftovers.forget(self._snapshot)
        return Pass(number, started, read, changed, self._seconds() - started, full, asking)

    async def final_pass(self, number: int) -> Pass:
        """The source is off and has no snapshot: copy what changed since the last pass, as of now."""
        started = self._seconds()
        await self._ready()
        read, changed, full, asking = await self._copy(None)
        return Pass(number, started, read, changed, self._seconds() - started, full, asking)

    async def _copy(self, snapshot: Optional[str]) -> tuple[int, int, bool, float]:
        """Ask what changed and copy it: (bytes read, bytes changed, a full pass, seconds spent asking)."""
        stored = self._copier.change_ids()
        areas: dict[int, list[tuple[int, int]]] = {}
        full = False
        asked_at = self._seconds()
        for disk in self._disks:
            since = stored.get(disk.index)
            if since is not None:
                try:
                    areas[disk.index] = await self._vm.changed_areas(snapshot, disk.key, disk.capacity, since)
                    continue
                except ChangeIdRefused as e:
                    self._note(f"{disk.label}: {e.message}: a full pass reads the whole disk again")
            # Nothing to compare with (a first pass, maybe interrupted, or tracking was reset): the disk
            # starts over on an empty target, and every allocated area is read.
            if snapshot is None:
                raise WarmFailed(f"{disk.label} has no changeId stored from a pass: the final pass cannot know"
                                 " what changed")
            full = True
            await self._copier.start_over(disk.index)
            areas[disk.index] = await self._vm.changed_areas(snapshot, disk.key, disk.capacity, ALL_AREAS)
        asking = self._seconds() - asked_at
        read = await self._copier.copy_areas(areas)
        return sum(read.values()), sum(length for spans in areas.values() for _, length in spans), full, asking
