"""A job's disks through the transfer engine: all at once, resumed from checkpoints, then verified.

For each disk: the source's identity (size, Last-Modified) is taken; a checkpoint of the same
source, chunk size and target lets the copy go on from the chunks already written, anything
else starts it over (saying why) on an empty target: a raw file cut to nothing, a qcow2 made
again, so that nothing an earlier run wrote stays where the source now holds zeros (a libvirt
volume made beforehand is kept, and its zeros are written). Each disk gets its streams from the vCenter's pool, runs its
worker, and reports its bytes; the job's progress is the sum, with a line per disk.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred, DeferredList, FirstError
from twisted.logger import Logger

from ...store.checkpoints import ChunkRecord
from .. import conditions
from ..conversion import Target, ToolFailed
from ..progress import RateMeter
from .engine import DiskCopy, StreamSource, TargetFile, target_spec, verify_chunks, zero_extents
from .plan import Chunk, SourceIdentity, bytes_done, chunks, remaining, zero_chunks

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
    copied: int = 0  # bytes on the destination (checkpointed or verified)

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
        total = sum(d.size for d in self._disks)
        done = sum(d.copied for d in self._disks)
        self._meter.add(self._seconds(), done)
        busy = next((d for d in self._disks if d.copied < d.size), self._disks[-1])
        self._reporter.update(
            current_bytes=done, total_bytes=total, disk_index=busy.index, disk_count=len(self._disks),
            disk_current_bytes=busy.copied, disk_total_bytes=busy.size,
            disks=tuple({"index": d.index, "label": d.label, "current_bytes": d.copied, "total_bytes": d.size}
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

    async def prepare(self, disks: Sequence[tuple[str, StreamSource, Target, SourceIdentity]]) -> list[DiskTransfer]:
        """Each disk with the chunks it still needs: from its checkpoint when source and target are the same."""
        saved = await self._store.transfers(self._job_id)
        prepared = []
        for index, (label, source, target, identity) in enumerate(disks):
            plan = chunks(source.size, self._chunk_size)
            info, done = saved.get(index, (None, {}))
            why_not = await self._why_not_resume(info, identity, target) if info else "no checkpoint"
            disk = DiskTransfer(index, label, source, target, plan)
            if why_not is None:
                disk.done, disk.fresh = done, False
                disk.copied = bytes_done(plan, done)
            else:
                if info:
                    self._note(f"{label}: starting over: {why_not}")
                await self._store.save_transfer(self._job_id, index, {
                    "identity": {"size": identity.size, "modified": identity.modified, "change_id": identity.change_id},
                    "chunk_size": self._chunk_size, "target": target.path, "format": target.format})
                disk.fresh = not target.exists
            prepared.append(disk)
        return prepared

    async def _why_not_resume(self, info: dict, identity: SourceIdentity, target: Target) -> Optional[str]:
        then = SourceIdentity(**info["identity"])
        changed = then.differs(identity)
        if changed:
            return f"the source changed since the checkpoint: {changed}"
        if info["chunk_size"] != self._chunk_size or info["target"] != target.path or info["format"] != target.format:
            return "the checkpoint was taken of another destination"
        if not await self._thd(os.path.exists, target.path):
            return f"{target.path} is gone"
        return None

    async def copy(self, disks: Sequence[DiskTransfer], progress: CopyProgress) -> int:
        """Copy every disk at once; returns how many chunks were tried again."""
        progress.report()
        return sum(await all_or_none([self._copy_disk(disk, progress) for disk in disks]))

    async def _copy_disk(self, disk: DiskTransfer, progress: CopyProgress) -> int:
        todo = remaining(disk.chunks, disk.done)
        if not todo:
            return 0
        if disk.fresh:
            await self._empty_target(disk)
        streams = await self._pool.acquire(self._vcenter, self._streams)
        try:
            copy = DiskCopy(
                self._processes, self._clock, job_id=self._job_id, label=disk.label, source=disk.source, chunks=todo,
                save=lambda records, i=disk.index: self._store.save_chunks(self._job_id, i, records),
                renew_cookie=self._renew, refresh_cookie=self._refresh, on_done=lambda n: progress.add(disk, n),
                stall_timeout=self._stall,
                streams=streams, fresh=disk.fresh,
                stream_rate=None if self._cap is None else max(1, self._cap // streams))
            target = TargetFile(disk.target.path, disk.target.format, True)
            async with target_spec(self._processes, target, disk.size) as spec:
                await copy.run(spec)
            return copy.retries
        finally:
            self._pool.release(self._vcenter, streams)

    async def _empty_target(self, disk: DiskTransfer) -> None:
        """The worker skips chunks of zeros on a fresh target: it must read zeros everywhere."""
        if disk.target.format == "qcow2":
            result = await self._processes.run("qemu-img create", ["qemu-img", "create", "-q", "-f", "qcow2",
                                                                   disk.target.path, str(disk.size)])
            if not result.ok:
                raise ToolFailed(conditions.in_tool_output(result.last_line, f"qemu-img creating {disk.target.path}")
                                 or result.describe("qemu-img create"))
        else:
            await self._thd(_thd_empty_file, disk.target.path)  # the worker extends it, sparse

    async def verify(self, disks: Sequence[DiskTransfer], progress: CopyProgress) -> None:
        """Read every destination disk locally by the same chunks and compare with the source's hashes."""
        for disk in disks:
            disk.copied = 0
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


def _thd_empty_file(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
