"""The conversion stage's copy and the verification stage.

Flat disks (the data of a thick or thin VMFS disk, read over /folder) go through the transfer
engine: parallel ranges, checkpoints, resume, and a verification that reads only the destination.
Other disks (sparse or streamOptimized VMDKs, which qemu-img must parse; VDDK) are streamed by
nbdkit into ``qemu-img convert``, one after the other, and verified by ``qemu-img compare``
against a second read of the source, as is every disk with ``verify: "full"``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from .conversion import TransferProgress, convert, transfer_range, verify
from .destination import PlannedDisk
from .disks import DiskSource
from .readers import DiskReaders
from .transfer.copier import CopyProgress, DiskTransfer, JobCopier
from .transfer.plan import SourceIdentity, ranges


class Copying:
    def __init__(self, *, processes, clock, copier: JobCopier, readers: DiskReaders, reporter, verify_mode,
                 identity: Callable, note: Callable[[str], None]):
        self._processes = processes
        self._clock = clock
        self._copier = copier
        self._readers = readers
        self._reporter = reporter
        self._mode = verify_mode  # True: chunk hashes; "full": a second read of the source; False
        self._identity = identity  # async (url) -> (size, Last-Modified)
        self._note = note
        self._disks: list[DiskTransfer] = []
        self.copy_range, self.verify_range = transfer_range(bool(verify_mode))
        self.resumable = False  # checkpoints exist: an interrupted copy can go on later
        self.retried_chunks = 0

    def by_engine(self, sources: Sequence[DiskSource]) -> bool:
        return all(self._readers.in_ranges(s) for s in sources)

    async def _wanted(self, planned: Sequence[PlannedDisk], sources: Sequence[DiskSource]) -> list:
        wanted = []
        for disk, source in zip(planned, sources):
            size, modified = await self._identity(self._readers.url(source))
            identity = SourceIdentity(size, modified, source.disk.change_id)
            wanted.append((source.disk.label, self._readers.stream(source), disk.target, identity))
        return wanted

    # -- warm passes (warm/precopy.py's AreaCopier) -----------------------------------------

    async def ready(self, planned: Sequence[PlannedDisk], sources: Sequence[DiskSource]) -> None:
        """Before a warm pass's first copy, while its snapshot makes the base disks readable: the
        checkpoints of an earlier run are taken up although the running source changed since."""
        if not self._disks:
            self._disks = await self._copier.prepare(await self._wanted(planned, sources), trust_source=True)
            self.resumable = True

    def change_ids(self) -> dict[int, Optional[str]]:
        return {d.index: d.change_id for d in self._disks}

    async def copy_areas(self, areas: dict[int, list[tuple[int, int]]]) -> dict[int, int]:
        """Copy these areas of the disks; the bytes read from each."""
        before = {d.index: d.read_bytes for d in self._disks}
        progress = CopyProgress(self._reporter, self._disks, self._clock.seconds, self.copy_range)
        self.retried_chunks += await self._copier.copy(self._disks, progress, areas=areas)
        return {d.index: d.read_bytes - before[d.index] for d in self._disks}

    async def start_over(self, index: int) -> None:
        await self._copier.start_over(index)

    async def save_change_ids(self, change_ids: dict[int, str]) -> None:
        for index, change_id in change_ids.items():
            await self._copier.save_change_id(index, change_id)

    # -- cold copies ----------------------------------------------------------------------

    async def copy(self, planned: Sequence[PlannedDisk], sources: Sequence[DiskSource],
                   allocated: Optional[dict[int, list[tuple[int, int]]]] = None) -> None:
        """Copy the disks; with ``allocated`` (changed block tracking's answer for a VM that is off, by
        disk index), only those areas are read: the rest of each disk is zeros."""
        if not self.by_engine(sources):
            progress = TransferProgress(self._reporter, [s.size for s in sources], self._clock.seconds, self.copy_range)
            for disk, source in zip(planned, sources):
                progress.start_disk(disk.index)
                await convert(self._processes, self._readers.nbdkit(source), source, disk.target, progress.disk_percent)
            progress.start_disk(len(planned) - 1)
            progress.disk_percent(100)
            return
        self._disks = await self._copier.prepare(await self._wanted(planned, sources))
        self.resumable = True
        resumed = sum(d.copied for d in self._disks)
        if resumed:
            self._note(f"resuming from {resumed} bytes already copied")
        progress = CopyProgress(self._reporter, self._disks, self._clock.seconds, self.copy_range, resumed)
        areas = None if allocated is None else {d.index: still_to_copy(d, allocated[d.index]) for d in self._disks}
        self.retried_chunks = await self._copier.copy(self._disks, progress, areas=areas)

    async def verify(self, planned: Sequence[PlannedDisk], sources: Sequence[DiskSource]) -> None:
        if self._mode is True and self._disks:
            progress = CopyProgress(self._reporter, self._disks, self._clock.seconds, self.verify_range)
            await self._copier.verify(self._disks, progress)
            return
        checking = TransferProgress(self._reporter, [s.size for s in sources], self._clock.seconds, self.verify_range)
        for disk, source in zip(planned, sources):
            checking.start_disk(disk.index)
            await verify(self._processes, self._readers.nbdkit(source), source, disk.target, checking.disk_percent)


def still_to_copy(disk: DiskTransfer, areas: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``areas`` in chunks not checkpointed yet (a resumed copy reads no chunk twice)."""
    todo = ranges(disk.chunks, [c.index for c in disk.chunks if c.index not in disk.done])
    kept, i = [], 0
    for start, length in areas:
        end = start + length
        while i < len(todo) and todo[i][1] <= start:
            i += 1
        j = i
        while j < len(todo) and todo[j][0] < end:
            low, high = max(start, todo[j][0]), min(end, todo[j][1])
            if low < high:
                kept.append((low, high - low))
            j += 1
    return kept
