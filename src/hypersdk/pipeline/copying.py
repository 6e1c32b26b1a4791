"""The conversion stage's copy and the verification stage.

Flat disks (the data of a thick or thin VMFS disk, read over /folder) go through the transfer
engine: parallel ranges, checkpoints, resume, and a verification that reads only the destination.
Other disks (sparse or streamOptimized VMDKs, which qemu-img must parse; VDDK) are streamed by
nbdkit into ``qemu-img convert``, one after the other, and verified by ``qemu-img compare``
against a second read of the source, as is every disk with ``verify: "full"``.
"""

from __future__ import annotations

from typing import Callable, Sequence

from .conversion import TransferProgress, convert, transfer_range, verify
from .destination import PlannedDisk
from .disks import DiskSource
from .readers import DiskReaders
from .transfer.copier import CopyProgress, DiskTransfer, JobCopier
from .transfer.plan import SourceIdentity


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

    async def copy(self, planned: Sequence[PlannedDisk], sources: Sequence[DiskSource]) -> None:
        if not self.by_engine(sources):
            progress = TransferProgress(self._reporter, [s.size for s in sources], self._clock.seconds, self.copy_range)
            for disk, source in zip(planned, sources):
                progress.start_disk(disk.index)
                await convert(self._processes, self._readers.nbdkit(source), source, disk.target, progress.disk_percent)
            progress.start_disk(len(planned) - 1)
            progress.disk_percent(100)
            return
        wanted = []
        for disk, source in zip(planned, sources):
            size, modified = await self._identity(self._readers.url(source))
            identity = SourceIdentity(size, modified, source.disk.change_id)
            wanted.append((source.disk.label, self._readers.stream(source), disk.target, identity))
        self._disks = await self._copier.prepare(wanted)
        self.resumable = True
        resumed = sum(d.copied for d in self._disks)
        if resumed:
            self._note(f"resuming from {resumed} bytes already copied")
        progress = CopyProgress(self._reporter, self._disks, self._clock.seconds, self.copy_range, resumed)
        self.retried_chunks = await self._copier.copy(self._disks, progress)

    async def verify(self, planned: Sequence[PlannedDisk], sources: Sequence[DiskSource]) -> None:
        if self._mode is True and self._disks:
            progress = CopyProgress(self._reporter, self._disks, self._clock.seconds, self.verify_range)
            await self._copier.verify(self._disks, progress)
            return
        checking = TransferProgress(self._reporter, [s.size for s in sources], self._clock.seconds, self.verify_range)
        for disk, source in zip(planned, sources):
            checking.start_disk(disk.index)
            await verify(self._processes, self._readers.nbdkit(source), source, disk.target, checking.disk_percent)
