"""Where converted disks land: files in output_dir, or volumes in a libvirt pool.

A local directory-backed pool is written in place (qemu-img converts straight
into the volume libvirt created); any other pool, a remote one included, gets
a converted file from the work directory uploaded through libvirt's stream API.
Everything is recorded (``record``) before it is created, so that it can be
removed should the job fail or be cancelled, even after a crash.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from typing import Callable, Optional

from attrs import frozen

from ..errors import Conflict, HyperSDKError, InvalidField
from ..jobs.definition import DestinationSpec
from ..libvirt.domain_xml import DomainDisk, virtio_target
from ..libvirt.host import LibvirtHost
from .conversion import Target
from .leftovers import JobLeftovers, Leftover


class DestinationProblem(HyperSDKError):
    code = "destination_problem"


@frozen
class PlannedDisk:
    index: int
    size: int  # guest-visible bytes
    name: str  # file or volume name
    target: Target  # what qemu-img writes
    domain_disk: DomainDisk
    staged: bool = False  # target is a work file: the import stage delivers it (or its conversion)
    final_path: Optional[str] = None  # where a staged disk lands in output_dir


def is_local_uri(uri: str) -> bool:
    """``qemu:///system`` is this host, where pool directories can be written directly;
    any transport (``qemu+ssh://host/system``, even ``qemu+unix:///system``) goes through libvirt."""
    parts = urllib.parse.urlsplit(uri)
    return not parts.hostname and parts.scheme == "qemu"


def disk_name(domain: str, index: int, disk_format: str) -> str:
    return f"{domain}-disk{index + 1}.{'qcow2' if disk_format == 'qcow2' else 'img'}"


class Destination:
    def __init__(self, spec: DestinationSpec, domain: str, host: LibvirtHost, in_thread, work_dir: str,
                 leftovers: JobLeftovers, reuse: frozenset = frozenset()):
        self._spec = spec
        self._domain = domain
        self._host = host
        self._thd = in_thread  # runs a blocking file-system call off the reactor
        self._work_dir = work_dir
        self._leftovers = leftovers  # what is about to be made is recorded first (removed should the job fail)
        self._reuse = reuse  # files and volumes this job wrote before it was interrupted: it resumes them

    async def check(self, sizes: list[int], uuid: str) -> None:
        """The domain name and the VM's uuid are free, and there is room for every disk (discovery)."""
        if await self._host.domain_exists(self._domain):
            raise Conflict(f"a domain named {self._domain} already exists on {self._spec.libvirt_uri}")
        holder = await self._host.domain_with_uuid(uuid)
        if holder is not None:
            raise Conflict(f"domain {holder} on {self._spec.libvirt_uri} already has this VM's uuid {uuid}:"
                           " it was migrated before; remove that domain (virsh undefine) to migrate it again")
        need = sum(sizes)
        if self._spec.output_dir is not None:
            free = await self._thd(_thd_free_space, self._spec.output_dir)
            where = self._spec.output_dir
            for index in range(len(sizes)):
                path = os.path.join(where, disk_name(self._domain, index, self._spec.disk_format))
                if path not in self._reuse and await self._thd(os.path.exists, path):
                    raise Conflict(f"{path} already exists: refusing to overwrite it")
        else:
            pool = await self._host.pool_info(self._spec.storage_pool)
            free, where = pool.available, f"storage pool {pool.name}"
        if free is not None and free < need:
            raise DestinationProblem(f"not enough room in {where}: {need} bytes needed, {free} available")

    async def plan(self, sizes: list[int]) -> list[PlannedDisk]:
        """Where every disk goes: written in place when it can be (an output_dir file, a local
        directory pool's volume), else staged in the work directory and delivered at import."""
        spec = self._spec
        local_pool = False
        if spec.storage_pool is not None:
            pool = await self._host.pool_info(spec.storage_pool)
            local_pool = is_local_uri(spec.libvirt_uri) and pool.path is not None
        planned = []
        for index, size in enumerate(sizes):
            name = disk_name(self._domain, index, spec.disk_format)
            target_dev = virtio_target(index)
            work_file = Target(os.path.join(self._work_dir, name), spec.disk_format)
            if spec.output_dir is not None:
                path = os.path.join(spec.output_dir, name)
                await self._leftovers.record(Leftover.file(path))
                planned.append(PlannedDisk(index, size, name, Target(path, spec.disk_format),
                                           DomainDisk.file(path, spec.disk_format, target_dev), False, path))
                continue
            path = await self._host.volume_path(spec.storage_pool, name) if name in self._reuse else None
            if path is None:
                volume = Leftover.volume(spec.libvirt_uri, spec.storage_pool, name)
                await self._leftovers.record(volume)
                try:
                    path = await self._host.create_volume(spec.storage_pool, name, size, spec.disk_format)
                except Conflict:  # someone else's volume: not this job's to remove
                    await self._leftovers.forget(volume)
                    raise
            disk = DomainDisk.pool_volume(spec.storage_pool, name, spec.disk_format, target_dev)
            if local_pool:
                planned.append(PlannedDisk(index, size, name, Target(path, spec.disk_format, exists=True), disk))
            else:
                planned.append(PlannedDisk(index, size, name, work_file, disk, staged=True))
        return planned

    async def deliver(self, disk: PlannedDisk, local_file: str, progress: Callable[[int, int], None]) -> None:
        """Put a disk finished in the work directory in its place: moved into output_dir, or
        uploaded into its pool volume through libvirt (which works for remote hosts too);
        ``progress(done, total)`` follows an upload."""
        if disk.final_path is not None:
            await self._thd(shutil.move, local_file, disk.final_path)
        else:
            await self._host.upload_volume(self._spec.storage_pool, disk.name, local_file, progress)

    async def define(self, xml: str) -> str:
        await self._leftovers.record(Leftover.domain(self._spec.libvirt_uri, self._domain))
        return await self._host.define_domain(xml)

    async def start(self, name: str) -> None:
        await self._host.start_domain(name)


def _thd_free_space(directory: str) -> Optional[int]:
    if not os.path.isdir(directory):
        raise InvalidField("destination.output_dir", f"{directory} is not a directory on the conversion host")
    if not os.access(directory, os.W_OK):
        raise InvalidField("destination.output_dir", f"{directory} is not writable by the daemon")
    usage = shutil.disk_usage(directory)
    return usage.free if usage.total else None  # (no size at all, as ramfs says: no room to check)
