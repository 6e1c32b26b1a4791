"""Where converted disks land: files in output_dir, or volumes in a libvirt pool.

A local directory-backed pool is written in place (qemu-img converts straight
into the volume libvirt created); any other pool, a remote one included, gets
a converted file from the work directory uploaded through libvirt's stream API.
Everything created is registered for removal should the job fail or be
cancelled.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from typing import Callable, Optional

from attrs import frozen
from twisted.internet.threads import deferToThreadPool

from ..errors import Conflict, HyperSDKError, InvalidField
from ..jobs.definition import DestinationSpec
from ..libvirt.domain_xml import DomainDisk, virtio_target
from ..libvirt.host import LibvirtHost
from .conversion import Target


class DestinationProblem(HyperSDKError):
    code = "destination_problem"


@frozen
class PlannedDisk:
    index: int
    size: int  # guest-visible bytes
    name: str  # file or volume name
    target: Target  # what qemu-img writes
    domain_disk: DomainDisk
    upload_from: Optional[str] = None  # work file to upload into the pool volume


def is_local_uri(uri: str) -> bool:
    """``qemu:///system`` is this host, where pool directories can be written directly;
    any transport (``qemu+ssh://host/system``, even ``qemu+unix:///system``) goes through libvirt."""
    parts = urllib.parse.urlsplit(uri)
    return not parts.hostname and parts.scheme == "qemu"


def disk_name(domain: str, index: int, disk_format: str) -> str:
    return f"{domain}-disk{index + 1}.{'qcow2' if disk_format == 'qcow2' else 'img'}"


class Destination:
    def __init__(self, spec: DestinationSpec, domain: str, host: LibvirtHost, thread_pool, reactor, work_dir: str,
                 undo: Callable):
        self._spec = spec
        self._domain = domain
        self._host = host
        self._threads = thread_pool
        self._reactor = reactor
        self._work_dir = work_dir
        self._undo = undo  # undo(description, async callable): run on failure

    def _thd(self, fn, *args):
        return deferToThreadPool(self._reactor, self._threads, fn, *args)

    async def check(self, sizes: list[int]) -> None:
        """The domain name is free and there is room for every disk (discovery)."""
        if await self._host.domain_exists(self._domain):
            raise Conflict(f"a domain named {self._domain} already exists on {self._spec.libvirt_uri}")
        need = sum(sizes)
        if self._spec.output_dir is not None:
            free = await self._thd(_thd_free_space, self._spec.output_dir)
            where = self._spec.output_dir
            for index in range(len(sizes)):
                path = os.path.join(where, disk_name(self._domain, index, self._spec.disk_format))
                if await self._thd(os.path.exists, path):
                    raise Conflict(f"{path} already exists: refusing to overwrite it")
        else:
            pool = await self._host.pool_info(self._spec.storage_pool)
            free, where = pool.available, f"storage pool {pool.name}"
        if free < need:
            raise DestinationProblem(f"not enough room in {where}: {need} bytes needed, {free} available")

    async def plan(self, sizes: list[int]) -> list[PlannedDisk]:
        """Create the destination of every disk (files are created by qemu-img itself)."""
        spec = self._spec
        planned = []
        in_place = False
        if spec.storage_pool is not None:
            pool = await self._host.pool_info(spec.storage_pool)
            in_place = is_local_uri(spec.libvirt_uri) and pool.path is not None
        for index, size in enumerate(sizes):
            name = disk_name(self._domain, index, spec.disk_format)
            target_dev = virtio_target(index)
            if spec.output_dir is not None:
                path = os.path.join(spec.output_dir, name)
                self._undo(f"remove {path}", lambda p=path: self._thd(_thd_remove, p))
                planned.append(PlannedDisk(index, size, name, Target(path, spec.disk_format),
                                           DomainDisk.file(path, spec.disk_format, target_dev)))
                continue
            path = await self._host.create_volume(spec.storage_pool, name, size, spec.disk_format)
            self._undo(f"delete volume {name}", lambda n=name: self._host.delete_volume(spec.storage_pool, n))
            disk = DomainDisk.pool_volume(spec.storage_pool, name, spec.disk_format, target_dev)
            if in_place:
                planned.append(PlannedDisk(index, size, name, Target(path, spec.disk_format, exists=True), disk))
            else:
                work_file = os.path.join(self._work_dir, name)
                self._undo(f"remove {work_file}", lambda p=work_file: self._thd(_thd_remove, p))
                planned.append(PlannedDisk(index, size, name, Target(work_file, spec.disk_format), disk, upload_from=work_file))
        return planned

    async def upload(self, disk: PlannedDisk, progress: Callable[[int, int], None]) -> None:
        """Send a disk converted in the work directory into its pool volume."""
        if disk.upload_from is None:
            return
        await self._host.upload_volume(self._spec.storage_pool, disk.name, disk.upload_from, progress)

    async def define(self, xml: str) -> str:
        name = await self._host.define_domain(xml)
        self._undo(f"undefine domain {name}", lambda: self._host.undefine_domain(name))
        return name

    async def start(self, name: str) -> None:
        await self._host.start_domain(name)


def _thd_free_space(directory: str) -> int:
    if not os.path.isdir(directory):
        raise InvalidField("destination.output_dir", f"{directory} is not a directory on the conversion host")
    if not os.access(directory, os.W_OK):
        raise InvalidField("destination.output_dir", f"{directory} is not writable by the daemon")
    return shutil.disk_usage(directory).free


def _thd_remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
