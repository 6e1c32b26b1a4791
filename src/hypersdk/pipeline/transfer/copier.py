"""A job's disks through the transfer engine: all at once, resumed from checkpoints, then verified.

For each disk: the source's identity (size, Last-Modified) is taken; a checkpoint of the same
source, chunk size and target lets the copy go on from the chunks already written, anything
else starts it over (saying why) on an empty target: a raw file cut to nothing, a qcow2 made
again, so that nothing an earlier run wrote stays where the source now holds zeros (a libvirt
volume made beforehand is kept, and its zeros are written). Each disk gets its streams from the vCenter's pool, runs its
worker, and reports its bytes; the job's progress is the sum, with a line per disk.

A copy can be of given areas only (changed block tracking: ``copy(..., areas=...)``): the worker
reads only the areas' bytes and rebuilds the chunks they touch over what the target holds; the
other chunks keep their records, or are recorded as zeros. ``prepare(..., trust_source=True)``
resumes although the source was modified since the checkpoint (a warm migration's next pass: the
caller knows what changed), and ``save_change_id`` keeps the changeId of the source a pass copied.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Optional, Sequence

from attrs import Factory, define, field
from twisted.internet.defer import CancelledError, Deferred, DeferredList, FirstError, maybeDeferred
from twisted.logger import Logger

from ...store.checkpoints import ChunkRecord
from .. import conditions
from ..conversion import Target, ToolFailed
from ..progress import RateMeter
from .engine import DiskCopy, StreamSource, TargetFile, target_spec, verify_chunks, zero_extents
from .plan import (AreaWork, Chunk, Piece, SourceIdentity, area_pieces, area_work, bytes_done, chunks, remaining,
                   zero_chunks)
from .worker import zero_hash

log = Logger()


@define
class DiskTransfer:
    index: int
    label: str
    source: StreamSource
    target: Target
    chunks: list[Chunk]
    done: dict[int, ChunkRecord] = field(factory=dict)
    fresh: bool = True  # the copy starts on an empty target (made so before the worker runs)
    copied: int = 0  # bytes of ``total`` done (checkpointed or verified)
    total: int = Factory(lambda self: self.source.size, takes_self=True)  # the bytes progress counts to:
    # the disk's size; during a copy of areas, the bytes of its areas (what it reads)
    read_bytes: int = 0  # bytes read from the source by this transfer's copies
    resumed: bool = False  # its checkpoint was kept: ``done`` is what the target holds
    change_id: Optional[str] = None  # the changeId of the source the target is a whole copy of, as stored
    # with the checkpoint (save_change_id); None unless resumed with a record for every chunk

    @property
    def size(self) -> int:
        return self.source.size


class CopyProgress:
    """Bytes done per disk, and the job's bytes, rate and ETA, as the reporter shows them."""

    def __init__(self, reporter, disks: Sequence[DiskTransfer], seconds, percent_range: tuple[float, float],
                 resumed: Optional[int] = None):
        self._reporter = reporter
        self._disks = disks
        self._seconds = seconds
        self._low, self._high = percent_range
        self._meter = RateMeter()
        self._resumed = resumed

    def add(self, disk: DiskTransfer, n: int) -> None:
        disk.copied += n
        self.report()

    def report(self) -> None:
        total = sum(d.total for d in self._disks)
        done = sum(d.copied for d in self._disks)
        self._meter.add(self._seconds(), done)
        busy = next((d for d in self._disks if d.copied < d.total), self._disks[-1])
        self._reporter.update(
            current_bytes=done, total_bytes=total, disk_index=busy.index, disk_count=len(self._disks),
            disk_current_bytes=busy.copied, disk_total_bytes=busy.total,
            disks=tuple({"index": d.index, "label": d.label, "current_bytes": d.copied, "total_bytes": d.total}
                        for d in self._disks),
            rate_bytes_per_second=self._meter.rate(), eta_seconds=self._meter.eta(total - done),
            percent_complete=self._low + (self._high - self._low) * (done / total if total else 1.0),
            **({} if self._resumed is None else {"resumed_at_bytes": self._resumed}),
        )


class JobCopier:
    def __init__(self, *, processes, clock, store, pool, vcenter: str, job_id: str, in_thread,
                 renew_cookie, refresh_cookie, streams_per_disk: int, stall_timeout: float, chunk_size: int,
                 max_bytes_per_second: Optional[int], note: Callable[[str], None]):
        self._processes = processes
        self._clock = clock
        self._store = store
        self._pool = pool
        self._vcenter = vcenter
        self._job_id = job_id
        self._thd = in_thread
        self._renew = renew_cookie
        self._refresh = refresh_cookie
        self._streams = streams_per_disk
        self._stall = stall_timeout
        self._chunk_size = chunk_size
        self._cap = max_bytes_per_second
        self._note = note  # a sentence for the job's history
        self._prepared: dict[int, DiskTransfer] = {}

    async def prepare(self, disks: Sequence[tuple[str, StreamSource, Target, SourceIdentity]],
                      trust_source: bool = False) -> list[DiskTransfer]:
        """Each disk with the chunks it still needs: from its checkpoint when source and target are the same
        (``trust_source``: although the source was modified or its changeId moved; its size must not change)."""
        saved = await self._store.transfers(self._job_id)
        prepared = []
        for index, (label, source, target, identity) in enumerate(disks):
            plan = chunks(source.size, self._chunk_size)
            info, done = saved.get(index, (None, {}))
            why_not = await self._why_not_resume(info, identity, target, trust_source) if info else "no checkpoint"
            disk = DiskTransfer(index, label, source, target, plan)
            if why_not is None:
                disk.done, disk.fresh, disk.resumed = done, False, True
                disk.copied = bytes_done(plan, done)
                if all(c.index in done for c in plan):  # (a pass that ended, and its records all stored)
                    disk.change_id = info["identity"].get("change_id")
            else:
                if info:
                    self._note(f"{label}: starting over: {why_not}")
                await self._store.save_transfer(self._job_id, index, {
                    "identity": {"size": identity.size, "modified": identity.modified, "change_id": identity.change_id},
                    "chunk_size": self._chunk_size, "target": target.path, "format": target.format})
                disk.fresh = not target.exists
            prepared.append(disk)
            self._prepared[index] = disk
        return prepared

    async def save_change_id(self, disk_index: int, change_id: Optional[str]) -> None:
        """Store ``change_id`` with the disk's checkpoint, as the changeId of the source its target now
        holds a whole copy of (after a pass: a later ``prepare`` shows it as ``DiskTransfer.change_id``)."""
        await self._store.save_change_id(self._job_id, disk_index, change_id)
        disk = self._prepared.get(disk_index)
        if disk is not None:
            disk.change_id = change_id

    async def start_over(self, disk_index: int) -> None:
        """Forget what the disk's target holds (its records and changeId): its next copy starts on an
        empty target (a full warm pass after vCenter refused the changeId)."""
        info, _records = (await self._store.transfers(self._job_id))[disk_index]
        await self._store.save_transfer(self._job_id, disk_index,  # (which drops the disk's records)
                                        {**info, "identity": {**info["identity"], "change_id": None}})
        disk = self._prepared[disk_index]
        disk.done, disk.change_id, disk.copied = {}, None, 0
        disk.fresh = not disk.target.exists  # (a volume made beforehand is kept: the worker writes its zeros)

    async def _why_not_resume(self, info: dict, identity: SourceIdentity, target: Target,
                              trusted: bool = False) -> Optional[str]:
        then = SourceIdentity(**info["identity"])
        changed = then.differs(identity, trusted)
        if changed:
            return f"the source changed since the checkpoint: {changed}"
        if info["chunk_size"] != self._chunk_size or info["target"] != target.path or info["format"] != target.format:
            return "the checkpoint was taken of another destination"
        if not await self._thd(os.path.exists, target.path):
            return f"{target.path} is gone"
        return None

    async def copy(self, disks: Sequence[DiskTransfer], progress: CopyProgress,
                   areas: Optional[Mapping[int, Sequence[Piece]]] = None) -> int:
        """Copy every disk at once; returns how many chunks were tried again.

        ``areas``: for the disks it names (by index), only these (start, length) areas of the source
        are read. Outside them the source must hold what the target's records say, or zeros where a
        chunk has no record (allocated areas on a fresh target; or what changed since the pass the
        records are of). A chunk an area touches is copied again (its pieces read, the rest taken from
        the target), one no area touches keeps its record, or is recorded as zeros. Such a disk's
        progress counts the bytes of its areas. Every disk's ``read_bytes`` grows by what was read."""
        unknown = set(areas or ()) - {d.index for d in disks}
        if unknown:
            raise ValueError(f"areas given for disks not copied: {sorted(unknown)}")
        work = {}
        for disk in disks:
            if areas is not None and disk.index in areas:
                work[disk.index] = area_work(disk.chunks, disk.done, area_pieces(disk.chunks, areas[disk.index]),
                                             disk.fresh)
                disk.total, disk.copied = work[disk.index].read_bytes, 0
            else:
                disk.total, disk.copied = disk.size, bytes_done(disk.chunks, disk.done)
        progress.report()
        return sum(await all_or_none([self._copy_disk(disk, progress, work.get(disk.index)) for disk in disks]))

    async def _copy_disk(self, disk: DiskTransfer, progress: CopyProgress, work: Optional[AreaWork] = None) -> int:
        todo = remaining(disk.chunks, disk.done) if work is None else list(work.copy)
        zero = () if work is None else work.zero
        if not todo and not zero:
            return 0
        fresh = disk.fresh
        if fresh:
            await self._empty_target(disk)
        disk.fresh = fresh and not todo  # once a worker ran, the target holds what it wrote
        if zero:  # the target reads zeros there: recorded as verification will hash them
            await self._save(disk, [ChunkRecord(c.index, zero_hash(c.length), True) for c in zero])
        if not todo:
            return 0
        streams = await self._pool.acquire(self._vcenter, self._streams)
        copy = None
        try:
            copy = DiskCopy(
                self._processes, self._clock, job_id=self._job_id, label=disk.label, source=disk.source, chunks=todo,
                save=lambda records: self._save(disk, records),
                renew_cookie=self._renew, refresh_cookie=self._refresh, on_done=lambda n: progress.add(disk, n),
                stall_timeout=self._stall,
                streams=streams, fresh=fresh,
                stream_rate=None if self._cap is None else max(1, self._cap // streams), areas=work)
            target = TargetFile(disk.target.path, disk.target.format, True)
            async with target_spec(self._processes, target, disk.size) as spec:
                await copy.run(spec)
            return copy.retries
        finally:
            if copy is not None:
                disk.read_bytes += copy.read_bytes
            self._pool.release(self._vcenter, streams)

    def _save(self, disk: DiskTransfer, records: list[ChunkRecord]) -> Deferred:
        """Store checkpoint records; once stored, they are the disk's ``done`` too (for a later pass)."""
        def stored(result):
            disk.done.update((r.index, r) for r in records)
            return result
        return maybeDeferred(self._store.save_chunks, self._job_id, disk.index, records).addCallback(stored)

    async def _empty_target(self, disk: DiskTransfer) -> None:
        """The worker skips chunks of zeros on a fresh target: it must read zeros everywhere."""
        if disk.target.format == "qcow2":
            result = await self._processes.run("qemu-img create", ["qemu-img", "create", "-q", "-f", "qcow2",
                                                                   disk.target.path, str(disk.size)])
            if not result.ok:
                raise ToolFailed(conditions.in_tool_output(result.last_line, f"qemu-img creating {disk.target.path}")
                                 or result.describe("qemu-img create"))
        else:
            await self._thd(_thd_empty_file, disk.target.path, disk.size)

    async def verify(self, disks: Sequence[DiskTransfer], progress: CopyProgress) -> None:
        """Read every destination disk locally by the same chunks and compare with the source's hashes."""
        for disk in disks:
            disk.copied, disk.total = 0, disk.size
        progress.report()
        saved = await self._store.transfers(self._job_id)

        async def one(disk: DiskTransfer) -> None:
            expected = saved[disk.index][1]
            target = TargetFile(disk.target.path, disk.target.format, True)
            holes = zero_chunks(disk.chunks, await zero_extents(self._processes, target))
            async with target_spec(self._processes, target, disk.size, read_only=True) as spec:
                await verify_chunks(self._processes, job_id=self._job_id, label=disk.label, target=spec,
                                    chunks=disk.chunks, expected=expected, known_zero=holes,
                                    on_checked=lambda n: progress.add(disk, n))

        await all_or_none([one(d) for d in disks])


async def all_or_none(coroutines) -> list:
    """Run them at once; the first failure cancels the others (their workers stop) and is raised."""
    running = [Deferred.fromCoroutine(c) for c in coroutines]
    try:
        outcomes = await DeferredList(running, fireOnOneErrback=True, consumeErrors=True)
    except FirstError as e:
        for d in running:
            if not d.called:
                d.cancel()
        await DeferredList(running, consumeErrors=True)
        e.subFailure.raiseException()
    except CancelledError:  # the job is cancelled: DeferredList cancelled each one already
        await DeferredList(running, consumeErrors=True)
        raise
    return [result for _ok, result in outcomes]


def _thd_empty_file(path: str, size: int) -> None:
    """Nothing in it, sparse: it reads zeros everywhere."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
